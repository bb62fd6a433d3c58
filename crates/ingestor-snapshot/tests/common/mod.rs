//! Shared by the integration tests: the two disks, sample stores, comparison by bits.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ingestor_codec::{Lsn, Op, SeriesKey, Timestamp};
use ingestor_fs::{Fs, SimFs, StdFs};
use ingestor_memstore::{
    CounterState, GaugeState, HistogramState, Memstore, MemstoreConfig, SeriesRecord, SeriesState,
    SlotPoint,
};
use ingestor_snapshot::{SnapshotCompression, SnapshotOptions, SnapshotStore};

/// A file system and a snapshot directory on it.
pub struct Disk {
    pub fs: Arc<dyn Fs>,
    pub dir: PathBuf,
    pub sim: Option<SimFs>,
    _tmp: Option<tempfile::TempDir>,
}

impl Disk {
    pub fn std() -> Disk {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("snapshots");
        Disk { fs: Arc::new(StdFs::new()), dir, sim: None, _tmp: Some(tmp) }
    }

    pub fn sim(seed: u64) -> Disk {
        let sim = SimFs::new(seed);
        Disk {
            fs: Arc::new(sim.clone()),
            dir: PathBuf::from("/db/data/snapshots"),
            sim: Some(sim),
            _tmp: None,
        }
    }

    /// Both kinds, for tests whose bodies must hold on each.
    pub fn both() -> [Disk; 2] {
        [Disk::std(), Disk::sim(1)]
    }

    pub fn name(&self) -> &'static str {
        if self.sim.is_some() { "SimFs" } else { "StdFs" }
    }

    pub fn open(&self, options: SnapshotOptions) -> SnapshotStore {
        SnapshotStore::open(Arc::clone(&self.fs), &self.dir, options).unwrap().0
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Names of the files in the snapshot directory.
    pub fn files(&self) -> Vec<String> {
        self.fs.read_dir(&self.dir).unwrap().into_iter().map(|e| e.name).collect()
    }

    /// Writes a file with the given bytes (synced, and its name too).
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let file = self.fs.create(&self.path(name)).unwrap();
        file.write_at(bytes, 0).unwrap();
        file.sync_all().unwrap();
        self.fs.sync_dir(&self.dir).unwrap();
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        self.fs.read_file(&self.path(name)).unwrap()
    }
}

pub const COMPRESSIONS: [SnapshotCompression; 4] = [
    SnapshotCompression::None,
    SnapshotCompression::Lz4,
    SnapshotCompression::Zstd { level: 3 },
    SnapshotCompression::Zstd { level: -5 },
];

pub fn snap_name(lsn: u64) -> String {
    format!("snap-{lsn:020}.snap")
}

pub fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(name, labels.iter().copied()).unwrap()
}

/// Applies one point (validated first).
pub fn apply(store: &Memstore, lsn: u64, key: &SeriesKey, ts: i64, op: Op) {
    let id = store.intern(key).unwrap();
    let points = [SlotPoint { series: id, timestamp: Timestamp(ts), op }];
    store.validate(&points).unwrap();
    store.apply(Lsn(lsn), &points);
}

/// A store of `n` series of every kind, built by applying updates: counters with resets,
/// gauges (some set out of order), histograms over the configured bounds, many labels and
/// unicode values, a deleted series; plus histograms over custom bounds and odd floats
/// (NaN, -0.0, infinities) inserted as a snapshot would.
pub fn rich_store(n: usize, config: MemstoreConfig) -> Memstore {
    let store = Memstore::new(config).unwrap();
    let mut lsn = 1;
    for i in 0..n {
        let host = format!("hôst-{i}-日本");
        let shard = format!("{}", i % 7);
        let k = match i % 5 {
            0 => key("requests_total", &[("host", &host), ("code", "200"), ("path", "/ä/\"q\"")]),
            1 => key("temperature", &[("host", &host), ("room", "Zürich ☃")]),
            2 => key("latency_seconds", &[("host", &host), ("shard", &shard)]),
            3 => {
                let labels: Vec<(String, String)> =
                    (0..20).map(|j| (format!("l{j:02}"), format!("v{j}-{i}-ñ"))).collect();
                SeriesKey::new("wide", labels).unwrap()
            }
            _ => key("up", &[("instance", &host)]),
        };
        let ts = 1_700_000_000_000 + i as i64;
        match i % 5 {
            0 => {
                apply(&store, lsn, &k, ts, Op::CounterAdd(i as f64 + 0.25));
                apply(&store, lsn + 1, &k, ts + 1, Op::CounterSet(0.5)); // a reset
                apply(&store, lsn + 2, &k, ts + 2, Op::CounterAdd(1e-9));
            }
            1 => {
                apply(&store, lsn, &k, ts, Op::GaugeSet(-(i as f64) / 3.0));
                apply(&store, lsn + 1, &k, ts - 10, Op::GaugeSet(99.0)); // older: ignored
                apply(&store, lsn + 2, &k, ts, Op::GaugeAdd(0.1));
            }
            2 => {
                for j in 0..(i % 13) {
                    apply(&store, lsn, &k, ts, Op::HistogramObserve(j as f64 * 0.37 - 0.5));
                }
                apply(&store, lsn + 1, &k, ts, Op::HistogramObserve(1e300));
            }
            3 => apply(&store, lsn, &k, ts, Op::CounterSet(i as f64)),
            _ => apply(&store, lsn, &k, ts, Op::GaugeSet(1.0)),
        }
        lsn += 3;
    }
    // A deleted series leaves a hole in the handles.
    let gone = key("gone", &[("x", "y")]);
    apply(&store, lsn, &gone, 5, Op::GaugeSet(1.0));
    apply(&store, lsn + 1, &gone, 6, Op::Delete);
    // Histograms over other bounds (from an older configuration) and odd floats.
    let custom: Arc<[f64]> = Arc::from([-1.0, 0.0, 1e-300, 42.0].as_slice());
    for (i, state) in [
        SeriesState::Histogram(Box::new(HistogramState {
            bounds: Arc::clone(&custom),
            buckets: vec![1, 2, 0, 3, 4].into_boxed_slice(),
            count: 10,
            sum: f64::NAN,
            min: -0.0,
            max: f64::INFINITY,
        })),
        SeriesState::Histogram(Box::new(HistogramState {
            bounds: custom,
            buckets: vec![0, 0, 0, 0, 1].into_boxed_slice(),
            count: 1,
            sum: 1e308,
            min: 1e308,
            max: 1e308,
        })),
        SeriesState::Gauge(GaugeState {
            value: -0.0,
            timestamp: Timestamp(i64::MIN),
            lsn: Lsn(u64::MAX),
        }),
        SeriesState::Counter(CounterState {
            total: f64::INFINITY,
            resets: u64::MAX,
            last_reset: Some(Timestamp(i64::MIN)),
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let record = SeriesRecord {
            key: key("odd", &[("i", &i.to_string())]),
            state,
            last_update: Timestamp(i64::MAX - i as i64),
        };
        store.insert_loaded(record).unwrap();
    }
    store
}

/// Every series of a store, sorted by key, with each float as its bits: equal exactly when
/// the two stores hold the same state bit for bit.
pub fn fingerprint(store: &Memstore) -> Vec<String> {
    store
        .all()
        .into_iter()
        .map(|v| {
            let state = match &v.state {
                SeriesState::Counter(c) => {
                    format!("counter {:x} {} {:?}", c.total.to_bits(), c.resets, c.last_reset)
                }
                SeriesState::Gauge(g) => {
                    format!("gauge {:x} {:?} {:?}", g.value.to_bits(), g.timestamp, g.lsn)
                }
                SeriesState::Histogram(h) => format!(
                    "histogram {:?} {:?} {} {:x} {:x} {:x}",
                    h.bounds.iter().map(|b| b.to_bits()).collect::<Vec<_>>(),
                    h.buckets,
                    h.count,
                    h.sum.to_bits(),
                    h.min.to_bits(),
                    h.max.to_bits()
                ),
            };
            format!("{} {state} {:?}", v.key, v.last_update)
        })
        .collect()
}

/// Asserts two stores hold the same series, by `Memstore::all()` and bit for bit.
pub fn assert_same(loaded: &Memstore, original: &Memstore) {
    assert_eq!(fingerprint(loaded), fingerprint(original));
    let strip = |s: &Memstore| {
        s.all().into_iter().map(|v| (v.key, v.state, v.last_update)).collect::<Vec<_>>()
    };
    // PartialEq on f64 fails on NaN, so compare the views without the odd series.
    let plain = |v: &Vec<_>| -> Vec<_> {
        v.iter()
            .filter(|(k, _, _): &&(SeriesKey, SeriesState, Timestamp)| k.name() != "odd")
            .cloned()
            .collect()
    };
    assert_eq!(plain(&strip(loaded)), plain(&strip(original)));
    assert_eq!(loaded.len(), original.len());
}

/// The small store of the golden hex dump and the worked example of `docs/format.md`: one
/// series of each kind.
pub fn golden_store() -> Memstore {
    let store = Memstore::new(MemstoreConfig::default()).unwrap();
    apply(&store, 1, &key("req", &[("code", "200")]), 1000, Op::CounterAdd(3.0));
    apply(&store, 2, &key("req", &[("code", "200")]), 1001, Op::CounterSet(1.0));
    apply(&store, 3, &key("temp", &[]), 2000, Op::GaugeSet(-0.5));
    store
        .insert_loaded(SeriesRecord {
            key: key("lat", &[("a", "é")]),
            state: SeriesState::Histogram(Box::new(HistogramState {
                bounds: Arc::from([1.0, 2.0].as_slice()),
                buckets: vec![1, 0, 2].into_boxed_slice(),
                count: 3,
                sum: 7.5,
                min: 0.5,
                max: 4.0,
            })),
            last_update: Timestamp(3000),
        })
        .unwrap();
    store
}

/// A hex dump with offsets, 16 bytes a line: the form golden files keep bytes in.
pub fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String =
            chunk.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect();
        out.push_str(&format!("{:06x}  {:<47}  {ascii}\n", i * 16, hex.join(" ")));
    }
    out
}

pub fn exists(disk: &Disk, path: &Path) -> bool {
    disk.fs.exists(path).unwrap()
}
