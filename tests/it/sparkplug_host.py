#!/usr/bin/env python3
"""A Sparkplug B primary host application for the integration tests, built on an independent
decoder (pysparkplug, from PyPI, and its protobuf bindings of the Eclipse Tahu schema).

Connects to the broker, publishes its STATE (`spBv1.0/STATE/<host id>`, retained, JSON, with an
`online: false` will), subscribes to the group, decodes every NBIRTH / NDATA / NDEATH with
pysparkplug (NDATA aliases resolved through the last NBIRTH, DDATA through the device's last
DBIRTH; DBIRTH / DDATA / DDEATH carry a "device" field) and prints one JSON line per message
on stdout. Reads commands on stdin, one per line:

    rebirth   publish NCMD `Node Control/Rebirth` = true to the edge node
    offline   publish STATE online=false (retained)
    online    publish STATE online=true (retained)

Usage: host.py --port PORT --group GROUP --node NODE --host-id HOST
"""

import argparse
import json
import math
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pysparkplug as sp
from pysparkplug._protobuf import Payload as PbPayload


def now_ms():
    return int(time.time() * 1000)


def plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--host-id", required=True)
    a = ap.parse_args()

    out_lock = threading.Lock()

    def emit(doc):
        doc["rx_ms"] = now_ms()
        with out_lock:
            sys.stdout.write(json.dumps(doc) + "\n")
            sys.stdout.flush()

    state_topic = f"spBv1.0/STATE/{a.host_id}"
    ncmd_topic = f"spBv1.0/{a.group}/NCMD/{a.node}"
    desired = {"online": True}
    births = {}

    client = mqtt.Client(client_id=f"primary-host-{a.host_id}", clean_session=True)

    def state(online):
        return json.dumps({"online": online, "timestamp": now_ms()}).encode()

    def on_connect(c, _userdata, _flags, rc):
        if rc != 0:
            emit({"type": "CONNECT_FAILED", "rc": rc})
            return
        c.subscribe(f"spBv1.0/{a.group}/#", qos=1)
        c.publish(state_topic, state(desired["online"]), qos=1, retain=True)
        emit({"type": "HOST_CONNECTED", "online": desired["online"]})

    def metrics_of(decoded, raw):
        pb = PbPayload.FromString(raw)
        out = []
        for m, p in zip(decoded.metrics, pb.metrics):
            props = {}
            if p.HasField("properties"):
                props = {
                    k: v.string_value for k, v in zip(p.properties.keys, p.properties.values)
                }
            out.append(
                {
                    "name": m.name,
                    "alias": m.alias,
                    "datatype": int(m.datatype),
                    "value": plain(m.value),
                    "timestamp": m.timestamp,
                    "historical": m.is_historical,
                    "null": m.is_null,
                    "properties": props,
                }
            )
        return out

    def on_message(_c, _userdata, msg):
        parts = msg.topic.split("/")
        if len(parts) < 4 or parts[0] != "spBv1.0" or parts[1] != a.group:
            return
        kind, node = parts[2], parts[3]
        device = parts[4] if len(parts) > 4 else None
        mqtt_flags = {"qos": msg.qos, "retain": bool(msg.retain)}
        try:
            if kind == "NBIRTH":
                b = sp.NBirth.decode(msg.payload)
                forget_devices(node)
                births[node] = b
                emit({"type": kind, "node": node, "seq": b.seq, "timestamp": b.timestamp,
                      "metrics": metrics_of(b, msg.payload), **mqtt_flags})
            elif kind == "NDATA":
                birth = births.get(node)
                if birth is None:
                    emit({"type": "NDATA_BEFORE_BIRTH", "node": node})
                    request_rebirth()
                    return
                d = sp.NData.decode(msg.payload, birth=birth)
                emit({"type": kind, "node": node, "seq": d.seq, "timestamp": d.timestamp,
                      "metrics": metrics_of(d, msg.payload), **mqtt_flags})
            elif kind == "NDEATH":
                d = sp.NDeath.decode(msg.payload)
                forget_devices(node)
                emit({"type": kind, "node": node, "bdSeq": d.bd_seq_metric.value,
                      "bdSeq_name": d.bd_seq_metric.name, **mqtt_flags})
            elif kind == "DBIRTH":
                b = sp.DBirth.decode(msg.payload)
                births[(node, device)] = b
                emit({"type": kind, "node": node, "device": device, "seq": b.seq,
                      "timestamp": b.timestamp, "metrics": metrics_of(b, msg.payload),
                      **mqtt_flags})
            elif kind == "DDATA":
                birth = births.get((node, device))
                if birth is None:
                    emit({"type": "DDATA_BEFORE_BIRTH", "node": node, "device": device})
                    request_rebirth()
                    return
                d = sp.DData.decode(msg.payload, birth=birth)
                emit({"type": kind, "node": node, "device": device, "seq": d.seq,
                      "timestamp": d.timestamp, "metrics": metrics_of(d, msg.payload),
                      **mqtt_flags})
            elif kind == "DDEATH":
                d = sp.DDeath.decode(msg.payload)
                births.pop((node, device), None)
                emit({"type": kind, "node": node, "device": device, "seq": d.seq, **mqtt_flags})
            elif kind == "NCMD":
                return
            else:
                emit({"type": kind, "node": node})
        except Exception as e:  # a payload the decoder refuses is a test failure, not a crash
            emit({"type": "DECODE_ERROR", "topic": msg.topic, "error": repr(e)})

    def forget_devices(node):
        # A node's birth or death ends its devices' births.
        for k in [k for k in births if isinstance(k, tuple) and k[0] == node]:
            del births[k]

    def request_rebirth():
        cmd = sp.NCmd(
            timestamp=now_ms(),
            metrics=(sp.Metric(timestamp=now_ms(), name="Node Control/Rebirth",
                               datatype=sp.DataType.BOOLEAN, value=True),),
        )
        client.publish(ncmd_topic, cmd.encode(include_dtypes=True), qos=1)

    client.will_set(state_topic, state(False), qos=1, retain=True)
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    while True:
        try:
            client.connect("127.0.0.1", a.port, keepalive=5)
            break
        except OSError:
            time.sleep(0.2)
    client.loop_start()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "rebirth":
            request_rebirth()
        elif cmd in ("online", "offline"):
            desired["online"] = cmd == "online"
            client.publish(state_topic, state(desired["online"]), qos=1, retain=True)
        elif cmd == "quit":
            break
        emit({"type": "COMMAND_SENT", "command": cmd})
    client.loop_stop()


if __name__ == "__main__":
    main()
