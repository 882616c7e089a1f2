//! Sparkplug B (Eclipse Sparkplug 3.0) for the MQTT sink's `format = "sparkplug_b"`: the gateway
//! is an edge node, every series of a metrics snapshot is a Sparkplug metric.
//!
//! - Topics: `spBv1.0/<group>/{NBIRTH,NDATA,NDEATH,NCMD}/<edge node>`; the primary host's state on
//!   `spBv1.0/STATE/<host id>` (JSON `{"online": bool, "timestamp": ms}`).
//! - Names: a series is named as Prometheus selects it, `family{label="value",...}` (unique and
//!   reversible); its labels are also in the metric's properties, with `prometheus_type` and,
//!   where the family's name says it, `engUnit`. Aliases are assigned in order of first sight and
//!   only grow during a session; a snapshot with a series the last birth did not list causes a
//!   rebirth before its NDATA.
//! - Datatypes: histogram `_bucket` and `_count` members are `UInt64`; everything else
//!   (counters, gauges, `_sum`) is `Double`. Fixed per name, so a value never changes type.
//! - Births carry every known metric with its newest value (metrics the newest snapshot lacks are
//!   `is_null`), `bdSeq` (Int64, matching the will), `Node Control/Rebirth` (false) and
//!   `copilot_edge_record_seq`, the spool sequence number of the snapshot (consumers use it to drop
//!   duplicates, as with the other formats). `seq` starts at 0 on every birth and counts every
//!   later message of the node modulo 256.
//! - NDATA: report by exception: `copilot_edge_record_seq` always, and every series whose value
//!   changed since the previous snapshot in spool order (all of them in the first NDATA after a
//!   birth), each with the snapshot's own timestamp; `is_historical` on records replayed from the
//!   backlog.
//! - Devices: a series labelled `equipment_id` belongs to the Sparkplug device of that id
//!   (`spBv1.0/<group>/{DBIRTH,DDATA,DDEATH}/<edge node>/<equipment id>`), so a new piece of
//!   equipment is one DBIRTH, not a rebirth of the node. Every NBIRTH is followed by the DBIRTH
//!   of every known device; a device that gains a series is born again (DDEATH, DBIRTH). A
//!   snapshot's changed device series go out as DDATA just before its NDATA (which carries
//!   `copilot_edge_record_seq`, so a host applies a record's device values before the NDATA that
//!   names it). Aliases are unique across the node and its devices; `seq` counts every message.
//!
//! The protobuf messages below mirror `sparkplug_b.proto` (vendored next to this file from
//! Eclipse Tahu, EPL-2.0, see `LICENSE-EPL-2.0.txt`) field for field for what the agent writes
//! and reads; decoding skips the fields not declared here (DataSet, Template, MetaData).

use prost::{encoding, Message};
use rustc_hash::FxHashMap;

use super::parse_labels;

/// The protobuf messages of `sparkplug_b.proto` (package `org.eclipse.tahu.protobuf`).
pub mod proto {
    /// `Payload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Payload {
        /// Milliseconds since the Unix epoch when the message was made.
        #[prost(uint64, optional, tag = "1")]
        pub timestamp: Option<u64>,
        /// The metrics the message carries.
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
        /// Message sequence number, 0..=255 (0 on every birth); absent in NDEATH.
        #[prost(uint64, optional, tag = "3")]
        pub seq: Option<u64>,
        /// Optional payload UUID (unused by the agent).
        #[prost(string, optional, tag = "4")]
        pub uuid: Option<String>,
        /// Optional opaque body (unused by the agent).
        #[prost(bytes = "vec", optional, tag = "5")]
        pub body: Option<Vec<u8>>,
    }

    /// `Payload.Metric`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        /// Metric name; births name every metric, data messages may send only the alias.
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        /// Alias assigned at birth, used instead of the name in later messages.
        #[prost(uint64, optional, tag = "2")]
        pub alias: Option<u64>,
        /// Milliseconds since the Unix epoch of the value (the snapshot's own timestamp).
        #[prost(uint64, optional, tag = "3")]
        pub timestamp: Option<u64>,
        /// A [`super::datatype`] code, fixed per name.
        #[prost(uint32, optional, tag = "4")]
        pub datatype: Option<u32>,
        /// Set on values replayed from the backlog rather than live.
        #[prost(bool, optional, tag = "5")]
        pub is_historical: Option<bool>,
        /// Transient values are not to be historized by hosts (unused by the agent).
        #[prost(bool, optional, tag = "6")]
        pub is_transient: Option<bool>,
        /// The metric has no value (a known series missing from the newest snapshot).
        #[prost(bool, optional, tag = "7")]
        pub is_null: Option<bool>,
        /// Properties: the series' labels, `prometheus_type` and, where known, `engUnit`.
        #[prost(message, optional, tag = "9")]
        pub properties: Option<PropertySet>,
        /// The value, absent when `is_null`.
        #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16")]
        pub value: Option<Value>,
    }

    /// `Payload.Metric.value` (the scalar members).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// Int8/16/32 and UInt8/16/32.
        #[prost(uint32, tag = "10")]
        IntValue(u32),
        /// Int64 and UInt64 (and DateTime).
        #[prost(uint64, tag = "11")]
        LongValue(u64),
        /// Float.
        #[prost(float, tag = "12")]
        FloatValue(f32),
        /// Double.
        #[prost(double, tag = "13")]
        DoubleValue(f64),
        /// Boolean.
        #[prost(bool, tag = "14")]
        BooleanValue(bool),
        /// String and Text.
        #[prost(string, tag = "15")]
        StringValue(String),
        /// Bytes and File.
        #[prost(bytes = "vec", tag = "16")]
        BytesValue(Vec<u8>),
    }

    /// `Payload.PropertySet`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertySet {
        /// Property names, parallel to `values`.
        #[prost(string, repeated, tag = "1")]
        pub keys: Vec<String>,
        /// Property values, parallel to `keys`.
        #[prost(message, repeated, tag = "2")]
        pub values: Vec<PropertyValue>,
    }

    /// `Payload.PropertyValue` (the scalar members).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertyValue {
        /// A [`super::datatype`] code.
        #[prost(uint32, optional, tag = "1")]
        pub r#type: Option<u32>,
        /// The property has no value.
        #[prost(bool, optional, tag = "2")]
        pub is_null: Option<bool>,
        /// The value, absent when `is_null`.
        #[prost(oneof = "PropertyValueValue", tags = "3, 4, 5, 6, 7, 8")]
        pub value: Option<PropertyValueValue>,
    }

    /// `Payload.PropertyValue.value` (the scalar members).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum PropertyValueValue {
        /// Int8/16/32 and UInt8/16/32.
        #[prost(uint32, tag = "3")]
        IntValue(u32),
        /// Int64 and UInt64 (and DateTime).
        #[prost(uint64, tag = "4")]
        LongValue(u64),
        /// Float.
        #[prost(float, tag = "5")]
        FloatValue(f32),
        /// Double.
        #[prost(double, tag = "6")]
        DoubleValue(f64),
        /// Boolean.
        #[prost(bool, tag = "7")]
        BooleanValue(bool),
        /// String and Text.
        #[prost(string, tag = "8")]
        StringValue(String),
    }
}

use proto::{Metric, Payload, PropertySet, PropertyValue, PropertyValueValue, Value};

/// `DataType` values of the schema used here.
pub mod datatype {
    /// `Int64` (`bdSeq`).
    pub const INT64: u32 = 4;
    /// `UInt64` (`copilot_edge_record_seq`, histogram `_bucket` and `_count` series).
    pub const UINT64: u32 = 8;
    /// `Double` (counters, gauges, `_sum`).
    pub const DOUBLE: u32 = 10;
    /// `Boolean` (`Node Control/Rebirth`).
    pub const BOOLEAN: u32 = 11;
    /// `String` (property values such as label values).
    pub const STRING: u32 = 12;
}

/// The birth/death sequence metric.
pub const BD_SEQ: &str = "bdSeq";
/// The rebirth request metric of NCMD (and its `false` in every NBIRTH).
pub const REBIRTH: &str = "Node Control/Rebirth";
/// The spool sequence number of the snapshot a message carries.
pub const RECORD_SEQ: &str = "copilot_edge_record_seq";
const RECORD_SEQ_ALIAS: u64 = 2;
/// Aliases of series start here (0 and 1 are left unused; `Node Control/Rebirth` has none).
const FIRST_SERIES_ALIAS: u64 = 16;

/// The label whose value makes a series part of a Sparkplug device.
pub const DEVICE_LABEL: &str = "equipment_id";

/// The topics of one edge node.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `spBv1.0/<group>/NBIRTH/<edge node>`.
    pub nbirth: String,
    /// `spBv1.0/<group>/NDATA/<edge node>`.
    pub ndata: String,
    /// `spBv1.0/<group>/NDEATH/<edge node>` (also the MQTT will).
    pub ndeath: String,
    /// `spBv1.0/<group>/NCMD/<edge node>`, where hosts request a rebirth.
    pub ncmd: String,
    /// `spBv1.0/STATE/<primary host id>` when a primary host is configured.
    pub state: Option<String>,
    group: String,
    node: String,
}

impl Topics {
    /// Topics of `node` in `group`, and of the primary host if any.
    pub fn new(group: &str, node: &str, primary_host: Option<&str>) -> Topics {
        let t = |kind: &str| format!("spBv1.0/{group}/{kind}/{node}");
        Topics {
            nbirth: t("NBIRTH"),
            ndata: t("NDATA"),
            ndeath: t("NDEATH"),
            ncmd: t("NCMD"),
            state: primary_host.map(|h| format!("spBv1.0/STATE/{h}")),
            group: group.to_string(),
            node: node.to_string(),
        }
    }

    /// The topic of a device message (`kind`: DBIRTH, DDATA, DDEATH).
    pub fn device(&self, kind: DeviceMessage, device: &str) -> String {
        format!(
            "spBv1.0/{}/{}/{}/{device}",
            self.group,
            kind.as_str(),
            self.node
        )
    }
}

/// The kinds of device message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceMessage {
    /// `DBIRTH`: the device's metrics with aliases and values.
    Birth,
    /// `DDATA`: the device's changed values.
    Data,
    /// `DDEATH`: the device is gone (before it is born again with new series).
    Death,
}

impl DeviceMessage {
    /// The message type as it appears in the topic (`DBIRTH`, `DDATA`, `DDEATH`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceMessage::Birth => "DBIRTH",
            DeviceMessage::Data => "DDATA",
            DeviceMessage::Death => "DDEATH",
        }
    }
}

/// A message of a device: its kind, the device id, the payload.
pub struct DeviceOut {
    /// DBIRTH, DDATA or DDEATH.
    pub kind: DeviceMessage,
    /// The device id: the series' `equipment_id` label value.
    pub device: Box<str>,
    /// The encoded Sparkplug payload.
    pub payload: Vec<u8>,
}

/// The messages of one snapshot: DDATA of the devices whose series changed, then the NDATA.
pub struct DataOut {
    /// Device messages to publish before the NDATA (DDEATH/DBIRTH of reborn devices, DDATA).
    pub devices: Vec<DeviceOut>,
    /// The encoded NDATA payload, published last.
    pub node: Vec<u8>,
}

impl DataOut {
    /// Messages in publish order (never none: the NDATA is always there).
    pub fn messages(&self) -> usize {
        self.devices.len() + 1
    }

    /// Bytes of every payload.
    pub fn bytes(&self) -> usize {
        self.node.len() + self.devices.iter().map(|d| d.payload.len()).sum::<usize>()
    }
}

/// Whether a device's DBIRTH lists its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Born {
    /// Not born in this session, or since the last NBIRTH.
    No,
    /// Born, with every series it has.
    Yes,
    /// Born, but a series was added since: DDEATH and DBIRTH again.
    Stale,
}

struct Device {
    id: Box<str>,
    born: Born,
}

struct Def {
    /// `family{labels}` as the exposition writes it.
    name: Box<str>,
    datatype: u32,
    properties: PropertySet,
    /// The device the series belongs to (index into `Node::devices`), or the node itself.
    device: Option<u32>,
}

/// The state of an edge node within one MQTT session: aliases, `seq`, and the values of the
/// previous snapshot for report by exception.
pub struct Node {
    bd_seq: u8,
    seq: u8,
    index: FxHashMap<Box<str>, u32>,
    defs: Vec<Def>,
    /// Value of each series in the previous snapshot in spool order (`None`: unknown, send).
    last: Vec<Option<u64>>,
    /// Baseline updates of the NDATA being published, applied by [`Node::commit`].
    pending: Vec<(u32, u64)>,
    devices: Vec<Device>,
    device_index: FxHashMap<Box<str>, u32>,
}

fn prop(key: &str, v: &str, keys: &mut Vec<String>, values: &mut Vec<PropertyValue>) {
    keys.push(key.to_string());
    values.push(PropertyValue {
        r#type: Some(datatype::STRING),
        is_null: None,
        value: Some(PropertyValueValue::StringValue(v.to_string())),
    });
}

/// The engineering unit a family's name states, by the Prometheus naming conventions.
fn unit_of(family: &str) -> Option<&'static str> {
    let base = family.strip_suffix("_total").unwrap_or(family);
    [
        ("_seconds", "s"),
        ("_bytes", "B"),
        ("_usd", "USD"),
        ("_ratio", "1"),
        ("_celsius", "°C"),
        ("_tokens", "{token}"),
    ]
    .iter()
    .find(|(s, _)| base.ends_with(s))
    .map(|(_, u)| *u)
}

/// One sample line of the exposition: (series, value), skipping comments and bad lines.
fn sample(line: &str) -> Option<(&str, f64)> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, v) = line.rsplit_once(' ')?;
    // Counters and bucket counts are integers: parse those without the float parser.
    let v = match v.parse::<u64>() {
        Ok(n) if n < 1 << 53 => n as f64,
        _ => match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().ok()?,
        },
    };
    Some((series, v))
}

fn metric_value(datatype: u32, v: f64) -> Value {
    if datatype == datatype::UINT64 {
        Value::LongValue(v.max(0.0) as u64)
    } else {
        Value::DoubleValue(v)
    }
}

impl Node {
    /// A node in a new MQTT session whose will carries `bd_seq`.
    pub fn new(bd_seq: u8) -> Node {
        Node {
            bd_seq,
            seq: 0,
            index: FxHashMap::default(),
            defs: Vec::new(),
            last: Vec::new(),
            pending: Vec::new(),
            devices: Vec::new(),
            device_index: FxHashMap::default(),
        }
    }

    /// Number of devices known in this session.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Number of series with an alias.
    pub fn series(&self) -> usize {
        self.defs.len()
    }

    /// Gives every series of the exposition `text` not seen before an alias; true when a series
    /// of the node itself was new (the next message must then be an NBIRTH). A new series of a
    /// device only makes that device due for a birth ([`Node::device_births`]).
    pub fn register(&mut self, text: &str) -> bool {
        let mut family_type = ("", "");
        let mut added = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((f, t)) = rest.split_once(' ') {
                    family_type = (f, t);
                }
                continue;
            }
            let Some((series, _)) = sample(line) else {
                continue;
            };
            if self.index.contains_key(series) {
                continue;
            }
            let (metric, labels) = match series.find('{') {
                Some(i) => (
                    &series[..i],
                    parse_labels(&series[i + 1..]).unwrap_or_default(),
                ),
                None => (series, Vec::new()),
            };
            let (family, kind) = family_type;
            let histogram_count = kind == "histogram"
                && (metric == format!("{family}_bucket") || metric == format!("{family}_count"));
            let datatype = if histogram_count {
                datatype::UINT64
            } else {
                datatype::DOUBLE
            };
            let device = labels
                .iter()
                .find(|(k, _)| k == DEVICE_LABEL)
                .map(|(_, id)| self.device(id));
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            for (k, v) in &labels {
                prop(k, v, &mut keys, &mut values);
            }
            if !kind.is_empty() {
                prop("prometheus_type", kind, &mut keys, &mut values);
            }
            if let Some(u) = unit_of(if family.is_empty() { metric } else { family }) {
                prop("engUnit", u, &mut keys, &mut values);
            }
            self.index.insert(series.into(), self.defs.len() as u32);
            self.defs.push(Def {
                name: series.into(),
                datatype,
                properties: PropertySet { keys, values },
                device,
            });
            self.last.push(None);
            match device {
                Some(d) => {
                    let dev = &mut self.devices[d as usize];
                    if dev.born == Born::Yes {
                        dev.born = Born::Stale;
                    }
                }
                None => added = true,
            }
        }
        added
    }

    /// The index of device `id`, added (not born) if new.
    fn device(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.device_index.get(id) {
            return i;
        }
        let i = self.devices.len() as u32;
        self.devices.push(Device {
            id: id.into(),
            born: Born::No,
        });
        self.device_index.insert(id.into(), i);
        i
    }

    /// Whether some device needs a DBIRTH before the next DDATA.
    pub fn device_births_due(&self) -> bool {
        self.devices.iter().any(|d| d.born != Born::Yes)
    }

    /// DBIRTH (after a DDEATH for a device born with fewer series) of every device that needs
    /// one, with its series' values in the snapshot `text` taken at `ts_ms`; each takes the next
    /// `seq`. The device's series are then reported in full by the next DDATA.
    pub fn device_births(&mut self, ts_ms: i64, text: &str, now_ms: i64) -> Vec<DeviceOut> {
        if !self.device_births_due() {
            return Vec::new();
        }
        let (ts, now) = (ts_ms.max(0) as u64, now_ms.max(0) as u64);
        let values = self.values_in(text);
        let mut out = Vec::new();
        for d in 0..self.devices.len() {
            let born = self.devices[d].born;
            if born == Born::Yes {
                continue;
            }
            let id = self.devices[d].id.clone();
            if born == Born::Stale {
                out.push(DeviceOut {
                    kind: DeviceMessage::Death,
                    device: id.clone(),
                    payload: self.next_payload(now, Vec::new()),
                });
            }
            let mut metrics = Vec::new();
            for (i, value) in values.iter().enumerate() {
                if self.defs[i].device == Some(d as u32) {
                    metrics.push(self.birth_metric(i, ts, *value));
                    self.last[i] = None;
                }
            }
            out.push(DeviceOut {
                kind: DeviceMessage::Birth,
                device: id,
                payload: self.next_payload(now, metrics),
            });
            self.devices[d].born = Born::Yes;
        }
        out
    }

    /// Series `i` as a birth lists it: name, alias, datatype, properties and `value` (null if
    /// unknown) at `ts`.
    fn birth_metric(&self, i: usize, ts: u64, value: Option<f64>) -> Metric {
        let d = &self.defs[i];
        Metric {
            name: Some(d.name.to_string()),
            alias: Some(FIRST_SERIES_ALIAS + i as u64),
            timestamp: Some(ts),
            datatype: Some(d.datatype),
            is_null: value.is_none().then_some(true),
            properties: Some(d.properties.clone()),
            value: value.map(|v| metric_value(d.datatype, v)),
            ..Default::default()
        }
    }

    /// The value of each known series in the exposition `text` (None where it has none).
    fn values_in(&self, text: &str) -> Vec<Option<f64>> {
        let mut values = vec![None; self.defs.len()];
        for (series, v) in text.lines().filter_map(sample) {
            if let Some(&i) = self.index.get(series) {
                values[i as usize] = Some(v);
            }
        }
        values
    }

    /// A payload with the next `seq` (which it takes).
    fn next_payload(&mut self, now: u64, metrics: Vec<Metric>) -> Vec<u8> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        Payload {
            timestamp: Some(now),
            metrics,
            seq: Some(u64::from(seq)),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn bd_seq_metric(&self, ts: u64) -> Metric {
        Metric {
            name: Some(BD_SEQ.into()),
            timestamp: Some(ts),
            datatype: Some(datatype::INT64),
            value: Some(Value::LongValue(u64::from(self.bd_seq))),
            ..Default::default()
        }
    }

    /// The `bdSeq` of this session (its will and births).
    pub fn bd_seq(&self) -> u8 {
        self.bd_seq
    }

    /// NBIRTH: every known metric of the node (not of its devices) with its value in `latest`
    /// (the newest snapshot, `None` before the first), `seq` 0; the DBIRTHs must follow.
    /// Registers the series of `latest` and of `current` (the registry as it is now) first, so
    /// no snapshot soon after needs another birth; without a snapshot the values are
    /// `current`'s. Forgets the NDATA baseline.
    pub fn birth(
        &mut self,
        latest: Option<(u64, i64, &str)>,
        current: &str,
        now_ms: i64,
    ) -> Vec<u8> {
        let now = now_ms.max(0) as u64;
        if let Some((_, _, text)) = latest {
            self.register(text);
        }
        self.register(current);
        let (ts, text) = match latest {
            Some((_, t, text)) => (t.max(0) as u64, text),
            None => (now, current),
        };
        let values = self.values_in(text);
        let mut metrics = Vec::with_capacity(self.defs.len() + 3);
        metrics.push(self.bd_seq_metric(now));
        metrics.push(Metric {
            // No alias: a host sends the command by name (Sparkplug 3.0,
            // tck-id-operational-behavior-data-commands-rebirth-name-aliases).
            name: Some(REBIRTH.into()),
            timestamp: Some(now),
            datatype: Some(datatype::BOOLEAN),
            value: Some(Value::BooleanValue(false)),
            ..Default::default()
        });
        metrics.push(Metric {
            name: Some(RECORD_SEQ.into()),
            alias: Some(RECORD_SEQ_ALIAS),
            timestamp: Some(ts),
            datatype: Some(datatype::UINT64),
            is_null: latest.is_none().then_some(true),
            value: latest.map(|(seq, _, _)| Value::LongValue(seq)),
            ..Default::default()
        });
        for (i, d) in self.defs.iter().enumerate() {
            if d.device.is_none() {
                metrics.push(self.birth_metric(i, ts, values[i]));
            }
        }
        self.last.iter_mut().for_each(|v| *v = None);
        self.pending.clear();
        self.seq = 1;
        // Every device is born again after the node ([`Node::device_births`]).
        self.devices.iter_mut().for_each(|d| d.born = Born::No);
        Payload {
            timestamp: Some(now),
            metrics,
            seq: Some(0),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// NDATA for the snapshot `text` (spool sequence `record_seq`, taken at `ts_ms`), whose series
    /// must all be registered, and before it a DDATA for each born device with a series to
    /// send. `exception`: only the series that changed since the previous snapshot (the baseline
    /// moves on [`Node::commit`]); otherwise all of them, baseline untouched (a live copy sent
    /// ahead of the backlog). Messages take consecutive `seq`s from the current one.
    pub fn data(
        &mut self,
        record_seq: u64,
        ts_ms: i64,
        text: &str,
        historical: bool,
        exception: bool,
        now_ms: i64,
    ) -> DataOut {
        let ts = ts_ms.max(0) as u64;
        let now = now_ms.max(0) as u64;
        self.pending.clear();
        // Written field by field with prost's wire primitives (the hot path: a message struct
        // per value would double the cost); the unit tests decode it with the message types.
        let mut body = Vec::with_capacity((self.defs.len() + 1) * 24);
        data_metric(
            &mut body,
            RECORD_SEQ_ALIAS,
            ts,
            historical,
            Value::LongValue(record_seq),
        );
        // Device bodies in order of first appearance; `slot` maps a device to its body.
        let mut bodies: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut slot = vec![usize::MAX; self.devices.len()];
        for (series, v) in text.lines().filter_map(sample) {
            let Some(&i) = self.index.get(series) else {
                continue;
            };
            let def = &self.defs[i as usize];
            if let Some(d) = def.device {
                if self.devices[d as usize].born != Born::Yes {
                    continue;
                }
            }
            let bits = v.to_bits();
            if exception {
                if self.last[i as usize] == Some(bits) {
                    continue;
                }
                self.pending.push((i, bits));
            }
            let value = metric_value(def.datatype, v);
            let out = match def.device {
                None => &mut body,
                Some(d) => {
                    let d = d as usize;
                    if slot[d] == usize::MAX {
                        slot[d] = bodies.len();
                        bodies.push((d as u32, Vec::with_capacity(64)));
                    }
                    &mut bodies[slot[d]].1
                }
            };
            data_metric(
                out,
                FIRST_SERIES_ALIAS + u64::from(i),
                ts,
                historical,
                value,
            );
        }
        let mut seq = self.seq;
        let message = |body: &[u8], seq: u8| {
            let mut out = Vec::with_capacity(body.len() + 16);
            encoding::uint64::encode(1, &now, &mut out);
            encoding::uint64::encode(3, &u64::from(seq), &mut out);
            out.extend_from_slice(body);
            out
        };
        let devices = bodies
            .into_iter()
            .map(|(d, b)| {
                let payload = message(&b, seq);
                seq = seq.wrapping_add(1);
                DeviceOut {
                    kind: DeviceMessage::Data,
                    device: self.devices[d as usize].id.clone(),
                    payload,
                }
            })
            .collect();
        DataOut {
            devices,
            node: message(&body, seq),
        }
    }

    /// The first `sent` messages of the last [`Node::data`] were published: `seq` moves on by
    /// that many, and when all of them were (`complete`), the baseline takes their values.
    pub fn commit(&mut self, sent: usize, complete: bool) {
        self.seq = self.seq.wrapping_add((sent % 256) as u8);
        if complete {
            for (i, bits) in self.pending.drain(..) {
                self.last[i as usize] = Some(bits);
            }
        } else {
            self.pending.clear();
        }
    }

    /// NDEATH with this session's `bdSeq` (the MQTT will, and sent before a clean disconnect).
    pub fn death(&self, now_ms: i64) -> Vec<u8> {
        Payload {
            timestamp: Some(now_ms.max(0) as u64),
            metrics: vec![self.bd_seq_metric(now_ms.max(0) as u64)],
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// Appends `Payload.metrics` entry (field 2) with alias, timestamp, is_historical and a scalar
/// value, the layout `Metric`'s derive would write.
fn data_metric(out: &mut Vec<u8>, alias: u64, ts: u64, historical: bool, value: Value) {
    use encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    let value_len = match value {
        Value::LongValue(v) => 1 + encoded_len_varint(v),
        Value::DoubleValue(_) => 9,
        _ => unreachable!("data metrics are UInt64 or Double"),
    };
    let len = 1
        + encoded_len_varint(alias)
        + 1
        + encoded_len_varint(ts)
        + if historical { 2 } else { 0 }
        + value_len;
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    encoding::uint64::encode(2, &alias, out);
    encoding::uint64::encode(3, &ts, out);
    if historical {
        encoding::bool::encode(5, &true, out);
    }
    match value {
        Value::LongValue(v) => encoding::uint64::encode(11, &v, out),
        Value::DoubleValue(v) => encoding::double::encode(13, &v, out),
        _ => {}
    }
}

/// True when an NCMD payload asks for a rebirth (`Node Control/Rebirth` = true, by name: births
/// give it no alias).
pub fn wants_rebirth(payload: &[u8]) -> bool {
    Payload::decode(payload).is_ok_and(|p| {
        p.metrics.iter().any(|m| {
            m.name.as_deref() == Some(REBIRTH) && m.value == Some(Value::BooleanValue(true))
        })
    })
}

/// A primary host's STATE message: (online, timestamp).
pub fn host_state(payload: &[u8]) -> Option<(bool, u64)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some((v.get("online")?.as_bool()?, v.get("timestamp")?.as_u64()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAP: &str = "# HELP req Requests.\n# TYPE req counter\nreq_total{endpoint=\"/v1/diagnose\",status=\"200\"} 3\n# TYPE lat_seconds histogram\nlat_seconds_bucket{le=\"0.5\"} 2\nlat_seconds_bucket{le=\"+Inf\"} 3\nlat_seconds_sum 0.75\nlat_seconds_count 3\n# TYPE up gauge\nup 1\n";

    fn by_alias(p: &Payload, alias: u64) -> Option<&Metric> {
        p.metrics.iter().find(|m| m.alias == Some(alias))
    }

    #[test]
    fn birth_names_types_and_aliases() {
        let mut n = Node::new(7);
        let b = Payload::decode(&n.birth(Some((41, 1_700_000_000_000, SNAP)), "", 5)[..]).unwrap();
        assert_eq!(b.seq, Some(0));
        let names: Vec<&str> = b.metrics.iter().filter_map(|m| m.name.as_deref()).collect();
        assert_eq!(names[..3], [BD_SEQ, REBIRTH, RECORD_SEQ]);
        assert_eq!(b.metrics[0].value, Some(Value::LongValue(7)));
        assert_eq!(b.metrics[2].value, Some(Value::LongValue(41)));
        assert_eq!(
            b.metrics[1].alias, None,
            "Rebirth is never aliased in a birth"
        );
        let bucket = b
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some("lat_seconds_bucket{le=\"+Inf\"}"))
            .unwrap();
        assert_eq!(bucket.datatype, Some(datatype::UINT64));
        assert_eq!(bucket.value, Some(Value::LongValue(3)));
        let props = bucket.properties.as_ref().unwrap();
        assert_eq!(props.keys, ["le", "prometheus_type", "engUnit"]);
        let sum = b
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some("lat_seconds_sum"))
            .unwrap();
        assert_eq!(sum.datatype, Some(datatype::DOUBLE));
        assert_eq!(sum.timestamp, Some(1_700_000_000_000));
        let req = b
            .metrics
            .iter()
            .find(|m| {
                m.name.as_deref() == Some("req_total{endpoint=\"/v1/diagnose\",status=\"200\"}")
            })
            .unwrap();
        assert_eq!(
            req.properties.as_ref().unwrap().keys,
            ["endpoint", "status", "prometheus_type"]
        );
        // Every alias is unique.
        let mut aliases: Vec<u64> = b.metrics.iter().filter_map(|m| m.alias).collect();
        let n_alias = aliases.len();
        aliases.dedup();
        assert_eq!(aliases.len(), n_alias);
        assert_eq!(n.series(), 6);
    }

    #[test]
    fn data_reports_by_exception_and_counts_seq() {
        let mut n = Node::new(0);
        n.birth(Some((1, 1000, SNAP)), "", 1000);
        let d1 = Payload::decode(&n.data(1, 1000, SNAP, false, true, 1001).node[..]).unwrap();
        n.commit(1, true);
        assert_eq!(d1.seq, Some(1));
        assert_eq!(
            d1.metrics.len(),
            7,
            "first NDATA after a birth carries everything"
        );
        assert!(d1.metrics.iter().all(|m| m.name.is_none()));
        let next = SNAP.replace("} 3\n", "} 4\n");
        // Not committed (publish failed): the same record again gives the same message.
        let a = n.data(2, 2000, &next, true, true, 2001).node;
        let b = n.data(2, 2000, &next, true, true, 2001).node;
        assert_eq!(a, b);
        n.commit(1, true);
        let d2 = Payload::decode(&b[..]).unwrap();
        assert_eq!(d2.seq, Some(2));
        // record seq, req_total and the +Inf bucket changed.
        assert_eq!(d2.metrics.len(), 3, "{d2:?}");
        assert!(d2
            .metrics
            .iter()
            .all(|m| m.is_historical == Some(true) && m.timestamp == Some(2000)));
        assert_eq!(
            by_alias(&d2, RECORD_SEQ_ALIAS).unwrap().value,
            Some(Value::LongValue(2))
        );
        // A live copy carries everything and leaves the baseline alone.
        let live = Payload::decode(&n.data(9, 9000, &next, false, false, 9001).node[..]).unwrap();
        n.commit(1, true);
        assert_eq!(live.metrics.len(), 7);
        let d3 = Payload::decode(&n.data(3, 3000, &next, true, true, 3001).node[..]).unwrap();
        assert_eq!(d3.metrics.len(), 1);
        assert_eq!(d3.seq, Some(4));
    }

    #[test]
    fn seq_wraps_and_births_reset_it() {
        let mut n = Node::new(255);
        n.birth(None, "", 0);
        for _ in 0..300 {
            n.data(1, 1, "", false, true, 1);
            n.commit(1, true);
        }
        assert_eq!(n.seq, (301 % 256) as u8);
        let b = Payload::decode(&n.birth(None, "", 0)[..]).unwrap();
        assert_eq!(b.seq, Some(0));
        assert_eq!(n.seq, 1);
    }

    #[test]
    fn a_birth_before_any_snapshot_carries_the_registry_as_it_is() {
        let mut n = Node::new(0);
        let b = Payload::decode(&n.birth(None, SNAP, 77)[..]).unwrap();
        assert_eq!(b.metrics.len(), 3 + 6);
        assert!(
            b.metrics[2].is_null == Some(true),
            "no record seq without a snapshot"
        );
        let up = b
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some("up"))
            .unwrap();
        assert_eq!(
            (up.value.clone(), up.timestamp),
            (Some(Value::DoubleValue(1.0)), Some(77))
        );
        // The first snapshot then needs no second birth.
        assert!(!n.register(SNAP));
        // With a snapshot, series only the registry has are listed, without a value.
        let mut n = Node::new(0);
        let b = Payload::decode(&n.birth(Some((3, 50, SNAP)), &format!("{SNAP}fresh 1\n"), 77)[..])
            .unwrap();
        let fresh = b
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some("fresh"))
            .unwrap();
        assert_eq!(fresh.is_null, Some(true));
    }

    #[test]
    fn new_series_need_a_birth() {
        let mut n = Node::new(0);
        assert!(n.register(SNAP));
        assert!(!n.register(SNAP));
        assert!(n.register(&format!("{SNAP}other{{x=\"1\"}} 2\n")));
        assert_eq!(n.series(), 7);
    }

    #[test]
    fn equipment_series_are_devices_born_apart_from_the_node() {
        let eq = |id: &str, v: u32| {
            format!("# TYPE copilot_equipment_requests_total counter\ncopilot_equipment_requests_total{{plant_id=\"p\",equipment_id=\"{id}\"}} {v}\n")
        };
        let snap1 = format!("{SNAP}{}", eq("press-01", 1));
        let mut n = Node::new(0);
        let b = Payload::decode(&n.birth(Some((1, 100, &snap1)), "", 100)[..]).unwrap();
        assert!(
            b.metrics
                .iter()
                .all(|m| !m.name.as_deref().unwrap_or("").contains("equipment_id")),
            "the NBIRTH lists no device series"
        );
        assert!(n.device_births_due());
        let db = n.device_births(100, &snap1, 100);
        assert_eq!(db.len(), 1);
        assert_eq!(
            (db[0].kind, &*db[0].device),
            (DeviceMessage::Birth, "press-01")
        );
        let p = Payload::decode(&db[0].payload[..]).unwrap();
        assert_eq!(p.seq, Some(1), "DBIRTH follows NBIRTH");
        assert_eq!(p.metrics.len(), 1);
        assert_eq!(p.metrics[0].value, Some(Value::DoubleValue(1.0)));
        // The first data: DDATA (seq 2) with the device's series, then the NDATA (seq 3).
        let d = n.data(1, 100, &snap1, false, true, 101);
        assert_eq!(d.messages(), 2);
        assert_eq!(d.devices[0].kind, DeviceMessage::Data);
        let dd = Payload::decode(&d.devices[0].payload[..]).unwrap();
        assert_eq!((dd.seq, dd.metrics.len()), (Some(2), 1));
        let nd = Payload::decode(&d.node[..]).unwrap();
        assert_eq!(nd.seq, Some(3));
        assert_eq!(nd.metrics.len(), 7, "record seq and the six node series");
        n.commit(d.messages(), true);
        // A new piece of equipment: no NBIRTH, one DBIRTH; unchanged devices send nothing.
        let snap2 = format!("{snap1}{}", eq("press-02", 5).lines().nth(1).unwrap());
        let snap2 = format!("{snap2}\n");
        assert!(!n.register(&snap2), "a new device is not a node rebirth");
        let db = n.device_births(200, &snap2, 200);
        assert_eq!(db.len(), 1);
        assert_eq!(&*db[0].device, "press-02");
        assert_eq!(Payload::decode(&db[0].payload[..]).unwrap().seq, Some(4));
        let d = n.data(2, 200, &snap2, false, true, 201);
        assert_eq!(d.devices.len(), 1, "only the new device's series is sent");
        assert_eq!(&*d.devices[0].device, "press-02");
        n.commit(d.messages(), true);
        // A device that gains a series is born again: DDEATH, then DBIRTH with both.
        let snap3 = format!("{snap2}copilot_equipment_requests_total{{plant_id=\"q\",equipment_id=\"press-01\"}} 2\n");
        assert!(!n.register(&snap3));
        let db = n.device_births(300, &snap3, 300);
        assert_eq!(
            db.iter().map(|m| m.kind).collect::<Vec<_>>(),
            [DeviceMessage::Death, DeviceMessage::Birth]
        );
        assert_eq!(
            Payload::decode(&db[1].payload[..]).unwrap().metrics.len(),
            2
        );
        // A rebirth of the node makes every device due again.
        n.birth(None, &snap3, 400);
        assert_eq!(n.device_births(400, &snap3, 400).len(), 2);
    }

    #[test]
    fn death_carries_bd_seq_without_seq() {
        let n = Node::new(42);
        let d = Payload::decode(&n.death(5)[..]).unwrap();
        assert_eq!(d.seq, None);
        assert_eq!(d.metrics.len(), 1);
        assert_eq!(d.metrics[0].name.as_deref(), Some(BD_SEQ));
        assert_eq!(d.metrics[0].value, Some(Value::LongValue(42)));
    }

    #[test]
    fn commands_and_host_state() {
        let cmd = |name: &str, v: bool| {
            Payload {
                timestamp: Some(1),
                metrics: vec![Metric {
                    name: Some(name.into()),
                    datatype: Some(datatype::BOOLEAN),
                    value: Some(Value::BooleanValue(v)),
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode_to_vec()
        };
        assert!(wants_rebirth(&cmd(REBIRTH, true)));
        assert!(!wants_rebirth(&cmd(REBIRTH, false)));
        assert!(!wants_rebirth(&cmd("Node Control/Reboot", true)));
        assert!(!wants_rebirth(b"\xff\xff not protobuf"));
        assert_eq!(
            host_state(br#"{"online":true,"timestamp":17}"#),
            Some((true, 17))
        );
        assert_eq!(host_state(b"ONLINE"), None);
    }
}
