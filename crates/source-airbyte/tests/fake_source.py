#!/usr/bin/env python3
"""A hand-written Airbyte source connector for the tests: one stream, `events`.

Event i (id i, from 0) happens at 2024-01-01T00:00:00Z + i * 37 minutes. Config keys:
- start_date, end_date (RFC 3339): emit the events in [start_date, end_date] (the end is
  inclusive on purpose, so the source's own window filter is exercised);
- without them: `total` events from the state's `offset`, a STATE every `per_state` events,
  sleeping `slow_seconds` after each event once `slow_after` events were emitted;
- fail: "exit" (non-zero exit), "garbage" (a non-protocol stdout line), "transient" (an
  ERROR trace of failure_type transient_error), "bad_value" (a string where an integer goes).
"""
import datetime
import json
import sys
import time

EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
STEP = datetime.timedelta(minutes=37)
SCHEMA = {
    "type": "object",
    "required": ["id", "at"],
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"},
        "day": {"type": "string", "format": "date"},
        "amount": {"type": "number"},
        "doc": {"type": ["null", "object"]},
        "note": {"type": ["null", "string"]},
    },
}


def emit(message):
    print(json.dumps(message), flush=True)


def log(text):
    emit({"type": "LOG", "log": {"level": "INFO", "message": text}})


def arg(name):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def event(i):
    at = EPOCH + i * STEP
    return {
        "id": i,
        "at": at.isoformat(),
        "day": at.date().isoformat(),
        "amount": i * 0.25,
        "doc": {"i": i, "tags": ["a", "ü"]} if i % 3 else None,
        "note": None if i % 5 == 0 else "event %d" % i,
    }


def record(data):
    emit({"type": "RECORD", "record": {"stream": "events", "data": data, "emitted_at": 0}})


def state(offset):
    emit({"type": "STATE", "state": {"type": "STREAM", "stream": {
        "stream_descriptor": {"name": "events"}, "stream_state": {"offset": offset}}}})


def read(config):
    fail = config.get("fail")
    log("reading events")
    if fail == "exit":
        log("about to fail")
        sys.stderr.write("fatal: the fake source gave up\n")
        sys.exit(3)
    if fail == "garbage":
        print("hello, this is not a protocol message", flush=True)
        time.sleep(5)
        return
    if fail == "transient":
        emit({"type": "TRACE", "trace": {"type": "ERROR", "emitted_at": 0, "error": {
            "message": "the API is down", "failure_type": "transient_error"}}})
        sys.exit(1)
    if fail == "bad_value":
        record(dict(event(0), id="seven"))
        return
    if "start_date" in config:
        start = datetime.datetime.fromisoformat(config["start_date"].replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(config["end_date"].replace("Z", "+00:00"))
        i = max(0, -(-(start - EPOCH) // STEP))
        while EPOCH + i * STEP <= end:
            record(event(i))
            i += 1
        return
    offset = 0
    state_path = arg("--state")
    if state_path:
        with open(state_path) as f:
            offset = json.load(f)[0]["stream"]["stream_state"]["offset"]
    total, per_state = config.get("total", 100), config.get("per_state", 10)
    for i in range(offset, total):
        record(event(i))
        if (i + 1) % per_state == 0:
            state(i + 1)
        if i + 1 >= config.get("slow_after", total):
            time.sleep(config.get("slow_seconds", 0.05))
    state(total)


def main():
    command = sys.argv[1]
    config = {}
    if arg("--config"):
        with open(arg("--config")) as f:
            config = json.load(f)
    if command == "spec":
        emit({"type": "SPEC", "spec": {"connectionSpecification": {"type": "object", "properties": {
            "start_date": {"type": "string"}, "end_date": {"type": "string"}, "total": {"type": "integer"},
            "per_state": {"type": "integer"}, "fail": {"type": "string"}}}}})
    elif command == "check":
        emit({"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}})
    elif command == "discover":
        emit({"type": "CATALOG", "catalog": {"streams": [
            {"name": "events", "json_schema": SCHEMA, "supported_sync_modes": ["full_refresh", "incremental"],
             "source_defined_primary_key": [["id"]]},
            {"name": "audit", "json_schema": {"type": "object", "properties": {}},
             "supported_sync_modes": ["full_refresh"]}]}})
    elif command == "read":
        read(config)


main()
