//! Feeds the client machine arbitrary operations and arbitrary faults on every request it
//! sends (transport errors, silence, region errors): it must never panic, and every operation
//! must finish, with a value or a typed error, within a bounded number of steps.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tikv_core::machine::testing::{Fault, RegionFault, Responder, run};
use tikv_core::machine::{
    Command, Core, KeyMode, MaintenanceCommand, PdCommand, RawCommand, RegionCommand,
};
use tikv_core::{Config, Time};

fn fault(byte: u8) -> Fault {
    match byte % 12 {
        0..=3 => Fault::None,
        4 => Fault::Transport,
        5 => Fault::Drop,
        6 => Fault::Region(RegionFault::NotLeader),
        7 => Fault::Region(RegionFault::NoLeader),
        8 => Fault::Region(RegionFault::EpochNotMatch),
        9 => Fault::Region(RegionFault::ServerIsBusy),
        10 => Fault::Region(RegionFault::RegionNotFound),
        _ => Fault::Region(RegionFault::StaleCommand),
    }
}

fn mode(byte: u8) -> KeyMode {
    if byte & 0x80 == 0 {
        KeyMode::Raw
    } else {
        KeyMode::Txn
    }
}

fn command(byte: u8, key: &[u8]) -> Command {
    let key = Bytes::copy_from_slice(key);
    let cf = String::new();
    match byte % 21 {
        0 => Command::Raw(RawCommand::Get { key, cf }),
        1 => Command::Raw(RawCommand::Put {
            key,
            value: Bytes::from_static(b"v"),
            ttl_secs: 0,
            cf,
            atomic: false,
        }),
        2 => Command::Raw(RawCommand::BatchGet {
            keys: vec![key.clone(), key],
            cf,
        }),
        3 => Command::Raw(RawCommand::Scan {
            start: key,
            end: Bytes::new(),
            limit: 5,
            key_only: false,
            reverse: false,
            cf,
        }),
        4 => Command::Raw(RawCommand::DeleteRange {
            start: key,
            end: Bytes::new(),
            cf,
        }),
        5 => Command::Raw(RawCommand::Checksum {
            start: key,
            end: Bytes::new(),
        }),
        6 => Command::Pd(PdCommand::Timestamp),
        7 => Command::Region(RegionCommand::SplitRegions {
            mode: mode(byte),
            keys: vec![key],
            scatter: byte % 2 == 0,
            scatter_group: String::new(),
        }),
        8 => Command::Region(RegionCommand::LocateRange {
            start: key,
            end: Bytes::new(),
            mode: mode(byte),
            limit: u32::from(byte % 4),
        }),
        9 => Command::Region(RegionCommand::LocateRegionById {
            region_id: u64::from(byte),
            mode: mode(byte),
        }),
        10 => Command::Region(RegionCommand::WaitScatterRegionFinish {
            region_id: u64::from(byte),
            budget: std::time::Duration::from_millis(500),
        }),
        11 => Command::Region(RegionCommand::CheckRegionInScattering {
            region_id: u64::from(byte),
        }),
        12 => Command::Pd(PdCommand::ClusterId),
        13 => Command::Maintenance(MaintenanceCommand::DeleteRange {
            start: key,
            end: Bytes::new(),
            notify_only: byte % 2 == 0,
        }),
        14 => Command::Maintenance(MaintenanceCommand::UnsafeDestroyRange {
            start: key,
            end: Bytes::new(),
        }),
        15 => Command::Pd(PdCommand::StaleTimestamp {
            prev_secs: u64::from(byte),
        }),
        16 => Command::Pd(PdCommand::GetExternalTimestamp),
        17 => Command::Pd(PdCommand::SetExternalTimestamp(tikv_core::Timestamp::from_version(u64::from(byte)))),
        18 => Command::Pd(PdCommand::TxnSafePoint),
        19 => Command::Pd(PdCommand::CheckVisibility {
            start_ts: tikv_core::Timestamp::from_version(u64::from(byte)),
        }),
        _ => Command::Raw(RawCommand::CompareAndSwap {
            key,
            previous: None,
            value: Bytes::from_static(b"v"),
            cf,
            atomic: true,
        }),
    }
}

fuzz_target!(|input: (u64, Vec<(u8, Vec<u8>)>, Vec<u8>)| {
    let (seed, ops, faults) = input;
    let Ok(mut core) = Core::new(
        Config::default().with_rng_seed(seed),
        vec!["pd:2379".to_owned()],
        Time::ZERO,
    ) else {
        return;
    };
    let mut ids = Vec::new();
    for (kind, key) in ops.iter().take(16) {
        ids.push(core.handle_command(Time::ZERO, command(*kind, key)));
    }
    let faults: Vec<Fault> = faults.iter().take(4096).map(|b| fault(*b)).collect();
    let outcome = run(&mut core, &mut Responder::default(), &faults, Time::ZERO, 1_000_000)
        .unwrap_or_else(|err| panic!("machine did not settle: {err}"));
    for id in ids {
        assert!(outcome.results.contains_key(&id), "operation {id:?} never finished");
    }
    assert_eq!(core.ops_in_flight(), 0);
});
