"""aria2p, the Python client for aria2's RPC, driving `haul daemon` through the core flows a
front-end uses. Run by tests/it/daemon.rs, which started the daemon and the test server and
checks the server's side (ranges, concurrency) afterwards. Any failed check raises."""

import json
import os
import sys
import threading
import time

import aria2p

port = int(os.environ["HAUL_RPC_PORT"])
secret = os.environ["HAUL_RPC_SECRET"]
urls = json.loads(os.environ["HAUL_TEST_URLS"])
root = os.environ["HAUL_ROOT"]

api = aria2p.API(aria2p.Client(host="http://127.0.0.1", port=port, secret=secret))


def wait(what, condition, timeout=30.0):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def status(gid):
    return api.client.tell_status(gid)


# The secret is enforced, with aria2's message.
wrong = aria2p.Client(host="http://127.0.0.1", port=port, secret="wrong")
try:
    wrong.get_global_stat()
    raise AssertionError("a wrong secret was accepted")
except aria2p.ClientException as error:
    assert error.message == "Unauthorized", error.message

# Notifications over WebSocket, collected while the rest runs.
notes = []
lock = threading.Lock()


def note(kind):
    def record(_api, gid):
        with lock:
            notes.append((kind, gid))

    return record


api.listen_to_notifications(
    threaded=True,
    on_download_start=note("start"),
    on_download_pause=note("pause"),
    on_download_stop=note("stop"),
    on_download_complete=note("complete"),
    on_download_error=note("error"),
    timeout=1,
    handle_signals=False,
)
time.sleep(0.3)

# Add with options; pause mid-body; resume; it finishes whole.
slow = api.add_uris([urls["slow"]], options={"dir": "a", "out": "slow.bin", "split": "1"})
assert len(slow.gid) == 16, slow.gid
wait("some of the body", lambda: int(status(slow.gid)["completedLength"]) > 300_000)
active = api.client.tell_active()
assert [d["gid"] for d in active] == [slow.gid], active
assert active[0]["status"] == "active"
assert active[0]["totalLength"] == str(urls["slow_size"]), active[0]["totalLength"]
assert api.pause([slow], force=True) == [True]
wait("the pause", lambda: status(slow.gid)["status"] == "paused")
paused_at = int(status(slow.gid)["completedLength"])
time.sleep(0.5)
assert int(status(slow.gid)["completedLength"]) == paused_at, "a paused download kept going"
assert [d["gid"] for d in api.client.tell_waiting(0, 10)] == [slow.gid]
assert api.resume([slow]) == [True]
wait("the resumed download to finish", lambda: status(slow.gid)["status"] == "complete", 60)
done = status(slow.gid)
assert done["completedLength"] == str(urls["slow_size"]), done
assert done["dir"] == os.path.join(root, "a"), done["dir"]
assert done["files"][0]["path"] == os.path.join(root, "a", "slow.bin"), done["files"]
assert os.path.getsize(os.path.join(root, "a", "slow.bin")) == urls["slow_size"]

# tellStatus with keys gives only those keys.
assert set(api.client.tell_status(slow.gid, ["gid", "status"]).keys()) == {"gid", "status"}

# max-concurrent-downloads follows changeGlobalOption: one at a time, then three.
assert api.set_global_options({"max-concurrent-downloads": "1"})
assert api.client.get_global_option()["max-concurrent-downloads"] == "1"
one = [api.add_uris([u]) for u in urls["one_at_a_time"]]
wait("the serial ones", lambda: all(status(d.gid)["status"] == "complete" for d in one), 60)
assert api.set_global_options({"max-concurrent-downloads": "3"})
three = [api.add_uris([u]) for u in urls["three_at_a_time"]]
wait("the parallel ones", lambda: all(status(d.gid)["status"] == "complete" for d in three), 60)

# Added paused: waiting in order, removable; its result can be removed.
first = api.add_uris([urls["never"][0]], options={"pause": "true"})
second = api.add_uris([urls["never"][1]], options={"pause": "true"})
waiting = [d["gid"] for d in api.client.tell_waiting(0, 10)]
assert waiting == [first.gid, second.gid], waiting
assert [d["gid"] for d in api.client.tell_waiting(-1, 1)] == [second.gid]
assert api.client.change_position(second.gid, 0, "POS_SET") == 0
assert [d["gid"] for d in api.client.tell_waiting(0, 10)] == [second.gid, first.gid]
assert api.remove([first, second]) == [True, True]
gids = {d.gid for d in api.get_downloads()}
assert first.gid not in gids and second.gid not in gids, gids

# system.multicall: one entry per call, the secret inside each.
answers = api.client.multicall(
    [
        {"methodName": "aria2.getGlobalStat", "params": []},
        {"methodName": "aria2.tellStatus", "params": [slow.gid, ["status"]]},
        {"methodName": "aria2.tellStatus", "params": ["0000000000000000"]},
    ]
)
assert answers[0][0]["numActive"] == "0", answers
assert answers[1] == [{"status": "complete"}], answers
assert answers[2]["code"] == 1, answers

stats = api.get_stats()
assert stats.num_stopped_total >= 8, stats.num_stopped_total

time.sleep(0.5)
api.stop_listening()
with lock:
    kinds = {(kind, gid) for kind, gid in notes}
for wanted in [("start", slow.gid), ("pause", slow.gid), ("complete", slow.gid)]:
    assert wanted in kinds, (wanted, sorted(kinds))
assert ("stop", first.gid) in kinds, sorted(kinds)
print(json.dumps({"ok": True, "paused_at": paused_at}))
