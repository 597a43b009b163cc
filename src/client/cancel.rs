//! What stops one piece of work: the token of the job that runs it (cancelled by its batch,
//! its handle, or the downloader) and, when the caller gave one, the request's own token.
//! Cheap to clone and to wait on: it is waited on for every chunk of every body.

use tokio_util::sync::CancellationToken;

/// Either token cancels the work.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel {
    job: CancellationToken,
    own: Option<CancellationToken>,
}

impl Cancel {
    pub(crate) fn new(job: CancellationToken, own: Option<CancellationToken>) -> Self {
        Self { job, own }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.job.is_cancelled()
            || self
                .own
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
    }

    /// Completes once either token is cancelled.
    pub(crate) async fn cancelled(&self) {
        match &self.own {
            Some(own) => tokio::select! {
                () = self.job.cancelled() => {}
                () = own.cancelled() => {}
            },
            None => self.job.cancelled().await,
        }
    }

    /// A narrower scope: cancelled with this one, and also by the returned token, which leaves
    /// this one alone (to stop the other connections of one file, say).
    pub(crate) fn child(&self) -> (Self, CancellationToken) {
        let token = self.job.child_token();
        (
            Self {
                job: token.clone(),
                own: self.own.clone(),
            },
            token,
        )
    }
}
