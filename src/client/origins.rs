//! First contact with an HTTPS origin: one request goes ahead, the others wait for its answer.
//!
//! Whether a server speaks HTTP/2 is learnt in the TLS handshake (ALPN). Sixteen requests that
//! start together before any connection is up would each open a connection of their own, and
//! an HTTP/2 server then gets sixteen connections where one multiplexes every stream (what
//! curl does, and what servers expect). So the first request to an origin goes alone; once its
//! answer's head has arrived, the connection pool knows what the origin speaks, and the others
//! go: over that one connection for HTTP/2, over connections of their own for HTTP/1.1. The
//! wait is bounded by the connect timeout, and a first request that fails hands the role to
//! the next one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use url::Url;

use super::cancel::Cancel;
use crate::Error;

#[derive(Default)]
pub(crate) struct Origins {
    known: Mutex<HashMap<String, Contact>>,
}

enum Contact {
    /// A first request is on its way; woken when it is answered or fails.
    Pending(Arc<Notify>),
    /// The origin has answered once: the pool knows how to reach it.
    Made,
}

/// Held by the first request to an origin until its answer's head arrives.
pub(crate) struct FirstContact<'a> {
    origins: &'a Origins,
    origin: String,
    notify: Arc<Notify>,
    answered: bool,
}

impl FirstContact<'_> {
    /// The origin answered (any status): the others may go.
    pub(crate) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for FirstContact<'_> {
    fn drop(&mut self) {
        let mut known = self.origins.lock();
        if self.answered {
            known.insert(std::mem::take(&mut self.origin), Contact::Made);
        } else {
            // Failed or cancelled: the next request to this origin goes first instead.
            known.remove(&self.origin);
        }
        drop(known);
        self.notify.notify_waiters();
    }
}

impl Origins {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Contact>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits (at most `patience`) while another request makes first contact with `url`'s
    /// origin. Returns the guard when this request is the first; `None` when it may go.
    /// Plain-HTTP origins never wait: without TLS there is no HTTP/2 to discover.
    pub(crate) async fn first_contact(
        &self,
        url: &Url,
        patience: Duration,
        cancel: &Cancel,
    ) -> Result<Option<FirstContact<'_>>, Error> {
        if url.scheme() != "https" {
            return Ok(None);
        }
        let origin = url.origin().ascii_serialization();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notify = {
                let mut known = self.lock();
                match known.get(&origin) {
                    Some(Contact::Made) => return Ok(None),
                    Some(Contact::Pending(notify)) => Arc::clone(notify),
                    None => {
                        let notify = Arc::new(Notify::new());
                        known.insert(origin.clone(), Contact::Pending(Arc::clone(&notify)));
                        return Ok(Some(FirstContact {
                            origins: self,
                            origin,
                            notify,
                            answered: false,
                        }));
                    }
                }
            };
            let woken = notify.notified();
            tokio::pin!(woken);
            // Registered before looking again, so a wake-up in between is not lost.
            woken.as_mut().enable();
            if matches!(self.lock().get(&origin), Some(Contact::Pending(n)) if Arc::ptr_eq(n, &notify))
            {
                tokio::select! {
                    () = cancel.cancelled() => return Err(Error::Cancelled),
                    () = tokio::time::sleep_until(deadline) => return Ok(None),
                    () = woken => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[tokio::test]
    async fn the_first_request_goes_alone_and_the_others_after_its_answer() {
        let origins = Origins::default();
        let cancel = Cancel::new(tokio_util::sync::CancellationToken::new(), None);
        let patience = Duration::from_secs(5);
        let first = origins
            .first_contact(&url("https://a.example/1"), patience, &cancel)
            .await
            .unwrap()
            .unwrap();
        let second_url = url("https://a.example/2");
        let second = origins.first_contact(&second_url, patience, &cancel);
        tokio::pin!(second);
        // The second waits while the first is on its way...
        assert!(
            tokio::time::timeout(Duration::from_millis(50), second.as_mut())
                .await
                .is_err()
        );
        // ...and goes, without a guard of its own, once the first is answered.
        first.answered();
        assert!(second.await.unwrap().is_none());
        // Other origins and plain HTTP are not held up.
        assert!(
            origins
                .first_contact(&url("https://b.example/"), patience, &cancel)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            origins
                .first_contact(&url("http://c.example/"), patience, &cancel)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_failed_first_request_hands_the_role_to_the_next() {
        let origins = Origins::default();
        let cancel = Cancel::new(tokio_util::sync::CancellationToken::new(), None);
        let patience = Duration::from_secs(5);
        let first = origins
            .first_contact(&url("https://a.example/"), patience, &cancel)
            .await
            .unwrap();
        let second_url = url("https://a.example/");
        let second = origins.first_contact(&second_url, patience, &cancel);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), second.as_mut())
                .await
                .is_err()
        );
        drop(first);
        assert!(second.await.unwrap().is_some(), "the next one goes first");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_bounded_by_the_patience_given() {
        let origins = Origins::default();
        let cancel = Cancel::new(tokio_util::sync::CancellationToken::new(), None);
        let _first = origins
            .first_contact(&url("https://a.example/"), Duration::from_secs(5), &cancel)
            .await
            .unwrap();
        let waited = origins
            .first_contact(&url("https://a.example/"), Duration::from_secs(1), &cancel)
            .await
            .unwrap();
        assert!(
            waited.is_none(),
            "after its patience, a request goes anyway"
        );
    }
}
