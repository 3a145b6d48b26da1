"""The event-stream parser, fed the way a network delivers bytes."""
import unittest

try:
    from . import support  # noqa: F401
except ImportError:
    import support  # noqa: F401

from refreshd_client import Event, EventStreamParser

STREAM = (
    b": keep-alive\n"
    b"id: 7\n"
    b"event: fetched_data\n"
    b'data: {"appid":"wx1","fetched_data":"hi","time_stamp":5}\n'
    b"\n"
    b"event: form_removed\n"
    b"id: 8\n"
    b'data: {"form_id":"f1"}\n'
    b"\n"
)
EXPECTED = [
    Event("fetched_data", '{"appid":"wx1","fetched_data":"hi","time_stamp":5}', "7"),
    Event("form_removed", '{"form_id":"f1"}', "8"),
]


class EventStreamParserTest(unittest.TestCase):
    def test_whole_stream(self):
        parser = EventStreamParser()
        self.assertEqual(parser.feed(STREAM), EXPECTED)
        self.assertEqual(parser.last_event_id, "8")

    def test_every_split_and_line_ending_gives_the_same_events(self):
        for ending in (b"\n", b"\r\n", b"\r"):
            stream = STREAM.replace(b"\n", ending)
            for split in range(len(stream) + 1):
                with self.subTest(ending=ending, split=split):
                    parser = EventStreamParser()
                    events = parser.feed(stream[:split]) + parser.feed(stream[split:])
                    self.assertEqual(events, EXPECTED)

    def test_byte_by_byte(self):
        stream = STREAM.replace(b"\n", b"\r\n")
        parser = EventStreamParser()
        events = []
        for i in range(len(stream)):
            events += parser.feed(stream[i:i + 1])
        self.assertEqual(events, EXPECTED)

    def test_multi_line_data_and_field_rules(self):
        parser = EventStreamParser()
        events = parser.feed(
            b"\xef\xbb\xbfdata:first\n"  # byte order mark, no space after the colon
            b"data:  two spaces\n"  # only one space is dropped
            b"data\n"  # no colon: empty value
            b"unknown: field\n"
            b"\n"
        )
        self.assertEqual(events, [Event("message", "first\n two spaces\n", None)])

    def test_event_without_data_is_not_dispatched_but_its_id_counts(self):
        parser = EventStreamParser("3")
        self.assertEqual(parser.feed(b"id: 4\nevent: form_data\n\n"), [])
        self.assertEqual(parser.last_event_id, "4")
        # The type does not leak into the next event; the id persists.
        self.assertEqual(parser.feed(b"data: x\n\n"), [Event("message", "x", "4")])

    def test_id_with_nul_is_ignored_and_retry_is_read(self):
        parser = EventStreamParser()
        events = parser.feed(b"id: a\x00b\nretry: 2500\nretry: soon\ndata: y\n\n")
        self.assertEqual(events, [Event("message", "y", None)])
        self.assertEqual(parser.retry_ms, 2500)

    def test_unfinished_event_waits_for_its_blank_line(self):
        parser = EventStreamParser()
        self.assertEqual(parser.feed(b"data: part"), [])
        self.assertEqual(parser.feed(b"ial\n"), [])
        self.assertEqual(parser.feed(b"\n"), [Event("message", "partial", None)])

    def test_utf8_split_inside_a_character(self):
        data = "data: 晴天\n\n".encode()
        parser = EventStreamParser()
        self.assertEqual(parser.feed(data[:8]) + parser.feed(data[8:]), [Event("message", "晴天", None)])


if __name__ == "__main__":
    unittest.main()
