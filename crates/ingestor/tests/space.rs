//! The free-space floor: below it a write is refused with `Error::DiskFull`, naming the
//! directory, and nothing of it is applied.

use ingestor::{Config, Error, FreeSpaceFloor, Ingestor, Op, SeriesKey, Timestamp, Update};

fn update() -> Update {
    let key = SeriesKey::new("temp", [("room", "a")]).unwrap();
    Update::new(key, Timestamp(1), Op::GaugeSet(1.0)).unwrap()
}

#[test]
fn below_the_floor_writes_are_refused_and_nothing_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().free_space_floor(FreeSpaceFloor::Bytes(u64::MAX));
    let (db, _) = Ingestor::open(dir.path(), config).unwrap();
    let (available, total, floor) = db.free_space().expect("a real file system says");
    assert!(available <= total && total > 0, "{available} of {total}");
    assert_eq!(floor, u64::MAX);
    match db.ingest(&[update()]) {
        Err(Error::DiskFull { dir: d, available: a, floor }) => {
            assert_eq!(d, dir.path());
            assert!(a < floor);
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    let err = db.ingest(&[update()]).unwrap_err().to_string();
    assert!(err.contains("below the floor") && err.contains("refused"), "{err}");
    assert!(db.get(&update().key).is_none(), "nothing of a refused batch is applied");
    drop(db);

    let (db, _) =
        Ingestor::open(dir.path(), Config::default().free_space_floor(FreeSpaceFloor::Off))
            .unwrap();
    db.ingest(&[update()]).unwrap();
    assert_eq!(db.free_space().unwrap().2, 0);
}

#[test]
fn the_automatic_floor_is_one_gib_or_five_percent() {
    assert_eq!(FreeSpaceFloor::Auto.bytes(100 << 30), 1 << 30);
    assert_eq!(FreeSpaceFloor::Auto.bytes(10 << 30), (10u64 << 30) / 20);
    assert_eq!(FreeSpaceFloor::Bytes(7).bytes(1 << 40), 7);
    assert_eq!(FreeSpaceFloor::Off.bytes(1 << 40), 0);
}
