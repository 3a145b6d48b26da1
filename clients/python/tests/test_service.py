"""The client against a real refreshd (REFRESHD_BIN): operator, developer and
provider calls, signed deliveries and fetches, device sync, the event stream into
the SQLite cache, and the cache read offline once the service is gone."""
import json
import os
import queue
import shutil
import tempfile
import unittest
from datetime import datetime, timedelta, timezone

try:
    from . import support
except ImportError:
    import support

from refreshd_client import (
    Developer,
    Device,
    Operator,
    Provider,
    RefreshdError,
    compute_signature,
    delivery_handler,
    verify_fetch_signature,
)
from refreshd_client.signatures import parse_signature_header

ZONE = "Asia/Shanghai"
FORM_CONFIG = {"forms": [{"name": "weather", "updateEnabled": True, "updateDuration": 2}]}


class World:
    """One refreshd with a developer data server, a provider server and the objects
    every test shares: an app with periodic fetch and a widget provider."""

    def __init__(self, refreshd):
        self.refreshd = refreshd
        self.operator = Operator(refreshd.url, refreshd.admin_key)
        self.data = support.DataServer()
        self.appid = support.unique("wx")
        app = self.operator.create_app(self.appid, "organization")
        self.app_secret = app.get("signing_secret")
        self.developer = Developer(refreshd.url, app["developer_key"])
        self.developer.put_periodic_fetch(self.appid, self.data.url + "/data")

        # The provider's server answers with the library's http.server helper. Its
        # secrets are a list the tests may change (several secrets are accepted).
        self.deliveries = queue.Queue()
        self.delivery_headers = []
        self.provider_secrets = []
        self.provider_server = support.LoopbackServer()
        self.provider_name = support.unique("com.example.weather.")
        created = self.operator.create_provider(self.provider_name, self.provider_server.url + "/refresh")
        self.provider_secrets.append(created["signing_secret"])
        self.provider = Provider(refreshd.url, created["provider_key"])
        self.provider.put_form_config(self.provider_name, FORM_CONFIG)
        helper = delivery_handler(self.provider_secrets, self.answer)
        world = self

        class Recording(helper):
            def do_POST(self):
                world.delivery_headers.append(dict(self.headers))
                super().do_POST()

        self.provider_server.set_handler(Recording)
        self.tmp = tempfile.mkdtemp(prefix="refreshd-pyclient-")  # last: nothing to leak if setup fails

    def answer(self, delivery):
        self.deliveries.put(delivery)
        return {"temp": 21, "form_id": delivery.form_id, "trigger": delivery.trigger}

    def next_delivery(self, form_id):
        """The next verified delivery for ``form_id`` (others are skipped)."""
        while True:
            try:
                delivery = self.deliveries.get(timeout=support.DEADLINE)
            except queue.Empty:
                raise AssertionError(f"no verified delivery for {form_id} within {support.DEADLINE} s") from None
            if delivery.form_id == form_id:
                return delivery

    def device(self, user_id=None, cache_path=None):
        """A new device of a (new) user, with its own cache file."""
        user_id = user_id or support.unique("user-")
        created = self.operator.create_device(support.unique("phone-"), user_id, ZONE)
        path = cache_path or os.path.join(self.tmp, support.unique("cache-") + ".sqlite3")
        device = Device(self.refreshd.url, created["device_key"], path)
        device.user_id = user_id
        device.device_id = created["device_id"]
        device.key = created["device_key"]
        return device

    def prepare(self, device, body):
        """Sets the user's token and launches the app, then waits for the fetch the
        launch makes due, so that later fetches are only the tests' own."""
        token = support.unique("tok-")
        self.data.bodies[token] = body
        device.set_token(self.appid, token)
        device.launch(self.appid)
        support.wait_until(
            lambda: self.developer.fetch_log(self.appid, device.user_id)["attempts"],
            message="the fetch made due by the launch",
        )
        return token

    def fetch(self, device, token, body):
        """Changes what the data server answers for the user, then fetches now."""
        self.data.bodies[token] = body
        result = self.developer.fetch_now(self.appid, device.user_id)
        if result["outcome"] != "ok":
            raise AssertionError(f"fetch-now for {device.user_id}: {result}")
        return result

    def close(self):
        self.provider_server.close()
        self.data.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def setUpModule():
    global WORLD
    refreshd = support.Refreshd().start()
    try:
        WORLD = World(refreshd)
    except BaseException:
        refreshd.cleanup()
        raise


def tearDownModule():
    WORLD.close()
    WORLD.refreshd.cleanup()


class Errors(unittest.TestCase):
    def test_wrong_key_is_401_unauthorized(self):
        device = Device(WORLD.refreshd.url, "rfdd_" + "0" * 40, os.path.join(WORLD.tmp, "nobody.sqlite3"))
        self.addCleanup(device.close)
        with self.assertRaises(RefreshdError) as caught:
            device.launch(WORLD.appid)
        self.assertEqual((caught.exception.status, caught.exception.code), (401, "unauthorized"))

    def test_bad_zone_is_400_invalid_zone(self):
        with self.assertRaises(RefreshdError) as caught:
            WORLD.operator.create_device(support.unique("phone-"), "u", "Mars/Olympus")
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_zone"))
        self.assertTrue(caught.exception.message)

    def test_invalid_config_lists_its_problems_in_details(self):
        with self.assertRaises(RefreshdError) as caught:
            WORLD.provider.put_form_config(WORLD.provider_name, {"forms": [{"name": "w", "updateDuration": -1}]})
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_config"))
        self.assertTrue(caught.exception.details)
        self.assertIn("path", caught.exception.details[0])

    def test_other_apps_are_404(self):
        with self.assertRaises(RefreshdError) as caught:
            WORLD.developer.fetch_log(support.unique("wx"), "u")
        self.assertEqual(caught.exception.status, 404)


class Calls(unittest.TestCase):
    """Device, provider and developer calls reach refreshd and come back typed."""

    def test_device_calls(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        device.set_zone("Europe/Berlin")
        with self.assertRaises(RefreshdError) as caught:
            device.set_zone("Nowhere/Atlantis")
        self.assertEqual(caught.exception.code, "invalid_zone")
        went_offline = datetime.now(timezone.utc) - timedelta(minutes=5)
        device.report_network(False, since=went_offline)
        device.report_network(True)
        with self.assertRaises(RefreshdError) as caught:
            device.report_network(False, since=datetime.now(timezone.utc) + timedelta(days=1))
        self.assertEqual(caught.exception.status, 400)

        form_id = device.add_form(WORLD.provider_name, "weather", hidden=True)
        self.assertEqual(device.get_form_data(form_id).form_name, "weather")  # known before any data
        device.set_visibility(form_id, True)
        for explained in (device.explain_form(form_id), WORLD.provider.explain_form(form_id)):
            self.assertIsInstance(explained, dict)
            self.assertTrue(explained)
        due = WORLD.provider.next_refresh(form_id, 10)["due_at"]
        self.assertRegex(due, r"^\d{4}-\d\d-\d\dT")
        with self.assertRaises(RefreshdError) as caught:
            WORLD.provider.next_refresh(form_id, 1)
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_next_refresh"))
        device.remove_form(form_id)
        self.assertIsNone(device.get_form_data(form_id))
        with self.assertRaises(RefreshdError) as caught:
            device.remove_form(form_id)
        self.assertEqual(caught.exception.status, 404)

    def test_background_fetch_and_developer_reads(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        with self.assertRaises(RefreshdError) as caught:
            device.fetch_background_data(WORLD.appid)
        self.assertEqual((caught.exception.status, caught.exception.code), (404, "no_cached_data"))
        self.assertIsNone(device.get_background_fetch_data(WORLD.appid))
        token = WORLD.prepare(device, "read me")
        fetched = WORLD.fetch(device, token, "read me too")
        got = device.fetch_background_data(WORLD.appid)
        self.assertEqual((got.fetched_data, got.time_stamp), ("read me too", fetched["time_stamp"]))
        self.assertEqual(device.get_background_fetch_data(WORLD.appid), got)  # kept in the cache
        attempts = WORLD.developer.fetch_log(WORLD.appid, device.user_id)["attempts"]
        self.assertEqual(len(attempts), 2)
        self.assertEqual(attempts[0]["outcome"], "ok")
        self.assertNotIn(token, json.dumps(attempts))
        self.assertIsInstance(WORLD.developer.explain(WORLD.appid, device.user_id), dict)


class Deliveries(unittest.TestCase):
    def test_real_delivery_is_verified_and_its_answer_becomes_the_form_data(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        form_id = device.add_form(WORLD.provider_name, "weather")
        delivery = WORLD.next_delivery(form_id)
        self.assertEqual((delivery.form_name, delivery.trigger), ("weather", "add"))
        self.assertTrue(delivery.delivery_id)
        form = support.wait_until(
            lambda: _form_data(device, form_id), message="the provider's answer as the form's data"
        )
        self.assertEqual(form.data, {"temp": 21, "form_id": form_id, "trigger": "add"})
        self.assertEqual(device.get_form_data(form_id).data, form.data)  # kept in the cache

    def test_after_rotation_deliveries_carry_two_signatures_and_either_secret_verifies(self):
        old = WORLD.provider_secrets[0]
        new = WORLD.operator.rotate_provider_signing_secret(WORLD.provider_name, overlap_minutes=60)["signing_secret"]
        device = WORLD.device()
        self.addCleanup(device.close)
        for secrets in ([old], [new]):
            with self.subTest(secret="old" if secrets == [old] else "new"):
                WORLD.provider_secrets[:] = secrets
                form_id = device.add_form(WORLD.provider_name, "weather")
                self.assertEqual(WORLD.next_delivery(form_id).trigger, "add")
        header = next(
            h.get("refreshd-signature") or h.get("Refreshd-Signature") for h in reversed(WORLD.delivery_headers)
        )
        timestamp, values = parse_signature_header(header)
        self.assertEqual(len(values), 2)
        self.assertNotEqual(values[0], values[1])
        WORLD.provider_secrets[:] = [new]


class SignedFetches(unittest.TestCase):
    def test_periodic_fetch_is_signed_over_path_and_query(self):
        self.assertIsNotNone(WORLD.app_secret, "creating an app answers a signing_secret")
        device = WORLD.device()
        self.addCleanup(device.close)
        token = WORLD.prepare(device, "signed")
        WORLD.fetch(device, token, "signed again")
        path, header = WORLD.data.requests_for(token)[-1]
        self.assertIn(f"appid={WORLD.appid}", path)
        self.assertIn(f"token={token}", path)
        self.assertTrue(verify_fetch_signature(WORLD.app_secret, header, path), header)
        self.assertFalse(verify_fetch_signature("ab" * 32, header, path))
        self.assertFalse(verify_fetch_signature(WORLD.app_secret, header, path.replace(token, token + "x")))

    def test_after_rotation_fetches_carry_the_new_signature_first_then_the_old(self):
        old = WORLD.app_secret
        self.assertIsNotNone(old, "creating an app answers a signing_secret")
        rotated = WORLD.operator.rotate_app_signing_secret(WORLD.appid, overlap_minutes=60)
        new = rotated["signing_secret"]
        WORLD.app_secret = new
        self.assertTrue(rotated["previous_valid_until"])
        device = WORLD.device()
        self.addCleanup(device.close)
        token = WORLD.prepare(device, "rotated")
        WORLD.fetch(device, token, "rotated again")
        path, header = WORLD.data.requests_for(token)[-1]
        timestamp, values = parse_signature_header(header)
        self.assertEqual(values, [compute_signature(new, timestamp, path), compute_signature(old, timestamp, path)])
        self.assertTrue(verify_fetch_signature(new, header, path))
        self.assertTrue(verify_fetch_signature(old, header, path))


class Sync(unittest.TestCase):
    def test_sync_without_cursor_resets_then_brings_only_changes(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        token = WORLD.prepare(device, "one")
        form_id = device.add_form(WORLD.provider_name, "weather")
        support.wait_until(lambda: _form_data(device, form_id), message="the form's first data")
        # Something the server never said: a reset must drop it.
        with device.cache.transaction() as tx:
            tx.put_form("stale-form", "p", "n")

        first = device.sync()
        self.assertTrue(first.reset)
        self.assertEqual([(a.appid, a.fetched_data) for a in first.apps], [(WORLD.appid, "one")])
        self.assertEqual([f.form_id for f in first.forms], [form_id])
        self.assertEqual(first.forms[0].data["trigger"], "add")
        self.assertEqual(first.forms[0].provider, WORLD.provider_name)
        self.assertEqual(first.removed_forms, [])
        self.assertEqual(device.cursor, first.cursor)
        self.assertEqual(device.get_background_fetch_data(WORLD.appid).fetched_data, "one")
        self.assertIsNone(device.get_form_data("stale-form"))
        self.assertEqual([f.form_id for f in device.forms()], [form_id])

        unchanged = device.sync()
        self.assertFalse(unchanged.reset)
        self.assertEqual((unchanged.apps, unchanged.forms, unchanged.removed_forms), ([], [], []))

        fetched = WORLD.fetch(device, token, "two")
        changed = device.sync()
        self.assertFalse(changed.reset)
        self.assertEqual([(a.appid, a.fetched_data, a.time_stamp) for a in changed.apps],
                         [(WORLD.appid, "two", fetched["time_stamp"])])
        self.assertEqual(changed.forms, [])
        self.assertEqual(device.get_background_fetch_data(WORLD.appid).fetched_data, "two")

        # The form is removed through another copy of the device (its own cache).
        other = Device(WORLD.refreshd.url, device.key, os.path.join(WORLD.tmp, support.unique("other-")))
        self.addCleanup(other.close)
        other.remove_form(form_id)
        removed = device.sync()
        self.assertFalse(removed.reset)
        self.assertEqual(removed.removed_forms, [form_id])
        self.assertIsNone(device.get_form_data(form_id))
        self.assertEqual(device.get_background_fetch_data(WORLD.appid).fetched_data, "two")

    def test_malformed_cursor_is_400_invalid_cursor(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        with self.assertRaises(RefreshdError) as caught:
            device.sync(cursor="not a cursor %%")
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_cursor"))
        self.assertIsNone(device.cursor)

    def test_a_stored_cursor_refused_as_malformed_falls_back_to_a_full_sync(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        with device.cache.transaction() as tx:
            tx.set_meta("sync_cursor", "garbage!")
        with self.assertLogs("refreshd_client.device", "WARNING"):
            result = device.sync()
        self.assertTrue(result.reset)
        self.assertEqual(device.cursor, result.cursor)


class EventStream(unittest.TestCase):
    def test_fetched_data_is_pushed_into_the_cache(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        token = WORLD.prepare(device, "before")
        events = support.Events()
        listener = device.listen(events)
        self.assertTrue(listener.wait_connected(support.DEADLINE))
        fetched = WORLD.fetch(device, token, "pushed")
        kind, data = events.wait_for(
            lambda kind, data: kind == "fetched_data" and data["fetched_data"] == "pushed",
            message="fetched_data 'pushed'",
        )
        self.assertEqual((data["appid"], data["time_stamp"]), (WORLD.appid, fetched["time_stamp"]))
        cached = device.get_background_fetch_data(WORLD.appid)
        self.assertEqual((cached.fetched_data, cached.time_stamp), ("pushed", fetched["time_stamp"]))
        self.assertTrue(device.last_event_id)
        self.assertTrue(listener.stop())
        self.assertFalse(listener.running)

    def test_form_data_and_form_removed_are_applied(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        events = support.Events()
        listener = device.listen(events)
        self.addCleanup(listener.stop)
        form_id = device.add_form(WORLD.provider_name, "weather")
        events.wait_for(lambda kind, data: kind == "form_data" and data["form_id"] == form_id,
                        message="the added form's data")
        WORLD.provider.put_form_data(form_id, {"temp": -3})
        events.wait_for(lambda kind, data: kind == "form_data" and data["data"] == {"temp": -3},
                        message="the provider's own update")
        self.assertEqual(device.get_form_data(form_id).data, {"temp": -3})
        other = Device(WORLD.refreshd.url, device.key, os.path.join(WORLD.tmp, support.unique("other-")))
        self.addCleanup(other.close)
        other.remove_form(form_id)
        events.wait_for(lambda kind, data: kind == "form_removed" and data["form_id"] == form_id,
                        message="form_removed")
        self.assertIsNone(device.get_form_data(form_id))

    def test_reconnecting_with_last_event_id_replays_only_what_was_missed(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        token = WORLD.prepare(device, "a")
        form_id = device.add_form(WORLD.provider_name, "weather")
        support.wait_until(lambda: _form_data(device, form_id), message="the form's first data")
        first = support.Events()
        listener = device.listen(first)
        first.wait_for(lambda kind, data: kind == "form_data", message="the form's data")
        self.assertTrue(listener.stop())

        WORLD.fetch(device, token, "missed")  # while nobody listens
        second = support.Events()
        listener = device.listen(second)
        self.addCleanup(listener.stop)
        second.wait_for(lambda kind, data: kind == "fetched_data" and data["fetched_data"] == "missed",
                        message="the missed fetched_data")
        # Replay is oldest first: the form's data, already seen, would have come before.
        self.assertNotIn("form_data", [kind for kind, _ in second.seen])
        self.assertEqual(device.get_background_fetch_data(WORLD.appid).fetched_data, "missed")

    def test_a_rotated_key_ends_the_listener_with_unauthorized(self):
        device = WORLD.device()
        self.addCleanup(device.close)
        listener = device.listen(initial_backoff=0.05)
        self.assertTrue(listener.wait_connected(support.DEADLINE))
        with self.assertLogs("refreshd_client.device", "ERROR"):
            rotated = WORLD.operator.rotate_key("devices", device.device_id)
            self.assertTrue(listener.join(support.DEADLINE), "the listener should end once its key is refused")
        self.assertEqual((listener.error.status, listener.error.code), (401, "unauthorized"))
        # The same cache goes on with the new key.
        renewed = Device(WORLD.refreshd.url, rotated["device_key"], device.cache.path)
        self.addCleanup(renewed.close)
        self.assertTrue(renewed.sync().reset)

    def test_a_new_device_of_a_user_with_data_is_sent_that_data(self):
        phone = WORLD.device()
        self.addCleanup(phone.close)
        token = WORLD.prepare(phone, "for every device")
        fetched = WORLD.fetch(phone, token, "for every device, again")
        tablet = WORLD.device(user_id=phone.user_id)
        self.addCleanup(tablet.close)
        events = support.Events()
        tablet.listen(events)
        events.wait_for(lambda kind, data: kind == "fetched_data", message="the user's data on the new device")
        cached = tablet.get_background_fetch_data(WORLD.appid)
        self.assertEqual((cached.fetched_data, cached.time_stamp), ("for every device, again", fetched["time_stamp"]))


class Offline(unittest.TestCase):
    """A service of its own, restarted and then stopped for good."""

    def test_listener_survives_a_restart_and_the_cache_is_read_offline(self):
        data_dir = tempfile.mkdtemp(prefix="refreshd-offline-")
        self.addCleanup(shutil.rmtree, data_dir, True)
        server = support.Refreshd(data_dir=data_dir).start()
        self.addCleanup(server.stop)
        world = World(server)
        self.addCleanup(world.close)
        device = world.device()
        self.addCleanup(device.close)
        cache_path, key = device.cache.path, device.key
        token = world.prepare(device, "before restart")
        events = support.Events()
        listener = device.listen(events, initial_backoff=0.05, max_backoff=0.5)
        self.assertTrue(listener.wait_connected(support.DEADLINE))

        # SIGTERM ends the stream; the same port and data come back.
        restarted = support.Refreshd(data_dir=data_dir, port=server.port)
        restarted.admin_key = server.admin_key
        server.stop()
        restarted.start()
        self.addCleanup(restarted.stop)
        world.fetch(device, token, "after restart")
        events.wait_for(lambda kind, data: kind == "fetched_data" and data["fetched_data"] == "after restart",
                        message="fetched_data after the restart")
        self.assertGreaterEqual(listener.connections, 2)
        self.assertTrue(listener.stop())
        device.close()

        restarted.stop()
        offline = Device(restarted.url, key, cache_path)
        self.addCleanup(offline.close)
        with self.assertRaises(OSError):
            offline.sync()  # nobody answers any more
        cached = offline.get_background_fetch_data(world.appid)
        self.assertEqual(cached.fetched_data, "after restart")
        self.assertIsNone(offline.get_background_fetch_data("wx-never-fetched"))


def _form_data(device, form_id):
    try:
        return device.fetch_form_data(form_id)
    except RefreshdError as error:
        if error.code == "no_form_data":
            return None
        raise


if __name__ == "__main__":
    unittest.main()
