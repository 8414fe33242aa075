#!/usr/bin/env python3
"""Decodes Kafka messages with fastavro using only the schemas in schemas/.

Usage: avro_decode.py SCHEMA_DIR MESSAGE_FILE...
Each MESSAGE_FILE holds one raw Kafka message value (Avro single-object encoding:
C3 01, the 8-byte CRC-64-AVRO fingerprint of the writer schema, the binary datum).
Prints one JSON object per message: {"file", "schema", "record"}. Exits non-zero on any
message that does not decode, naming it.
"""
import io
import datetime
import json
import sys
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form


def load_schemas(schema_dir):
    by_fingerprint = {}
    for path in sorted(Path(schema_dir).glob("*.avsc")):
        parsed = fastavro.parse_schema(json.loads(path.read_text()), named_schemas={})
        fp = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
        by_fingerprint[bytes.fromhex(fp)] = (path.stem, parsed)
    return by_fingerprint


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(value):
    """timestamp-millis come back as datetimes: print them as epoch milliseconds."""
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    raise TypeError(f"cannot print {type(value)}")


def main():
    schemas = load_schemas(sys.argv[1])
    failed = 0
    for name in sys.argv[2:]:
        data = Path(name).read_bytes()
        if data[:2] != b"\xc3\x01":
            print(f"{name}: not Avro single-object encoding (marker {data[:2].hex()})", file=sys.stderr)
            failed += 1
            continue
        fp = data[2:10]
        if fp not in schemas:
            print(f"{name}: unknown fingerprint {fp.hex()}; known: {[k.hex() for k in schemas]}", file=sys.stderr)
            failed += 1
            continue
        stem, schema = schemas[fp]
        buf = io.BytesIO(data[10:])
        record = fastavro.schemaless_reader(buf, schema, None)
        if buf.tell() != len(data) - 10:
            print(f"{name}: {len(data) - 10 - buf.tell()} bytes left after the datum", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps({"file": Path(name).name, "schema": stem, "record": record}, default=plain, sort_keys=True))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
