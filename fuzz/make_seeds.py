#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/seeds/<target>/ (committed; re-run after a
schema change). Avro seeds are encoded by fastavro from schemas/, independently of our codec."""
import io
import json
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE.parent / "schemas"
T = 1_794_999_990_000  # ms, 10 s before the targets' fixed "now"

interaction = {"interaction_id": "i-1", "occurred_at": T, "service": "checkout-api", "channel": "web",
               "kind": "order", "customer_ref": "c-1", "product": "payments-card", "region": None,
               "agent_id": "a-7", "team": None, "attributes": {"k": "v", "ü": "ß"}}
rating = {"rating_id": "r-1", "occurred_at": T, "interaction_id": "i-1", "metric": "nps", "score": 9,
          "comment": "great \U0001F600", "service": "survey", "channel": "email", "customer_ref": "c-1",
          "product": None, "region": "eu", "attributes": {}}
attributed = {"event": rating, "team": "payments", "attribution": "interaction",
              "claim": {"file": "payments.toml", "index": 1}, "ownership_version": "abc", "orphan": False,
              "interaction_kind": "order", "source": {"topic": "t", "partition": 3, "offset": 1 << 40},
              "attributed_at": T + 5}


def single_object(stem, record):
    schema = fastavro.parse_schema(json.loads((SCHEMAS / f"{stem}.avsc").read_text()), named_schemas={})
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return b"\xc3\x01" + fp + buf.getvalue()


def write(target, name, data):
    d = HERE / "seeds" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


write("decode", "interaction", single_object("interaction", interaction))
write("decode", "rating", single_object("rating", rating))
write("decode", "attributed_rating", single_object("attributed", attributed))
write("decode", "attributed_interaction", single_object("attributed", {**attributed, "event": interaction, "claim": None}))

iso = "2026-11-18T08:53:10.000Z"
ji = {**interaction, "occurred_at": iso}
jr = {**rating, "occurred_at": iso}
# First byte: bit 0 = endpoint (0 ratings, 1 interactions), the rest = batch limit - 1 (mod 8).
write("collector_validate", "rating", b"\x0e" + json.dumps(jr).encode())
write("collector_validate", "ratings_batch", b"\x0e" + json.dumps([jr, {**jr, "rating_id": "r-2", "metric": "ces", "score": 7}]).encode())
write("collector_validate", "interaction", b"\x0f" + json.dumps(ji).encode())
write("collector_validate", "interactions_batch", b"\x0f" + json.dumps([ji, {**ji, "interaction_id": "i-2", "channel": "phone", "team": "payments"}]).encode())
write("collector_validate", "bad_rating", b"\x0e" + json.dumps([{**jr, "score": 11, "colour": "red"}, jr, jr]).encode())
