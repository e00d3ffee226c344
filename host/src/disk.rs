//! The data directory's disk budget (issue: security, finding 4). A flood or a runaway
//! audit trail must not fill the disk: near the budget the gateway refuses new agent
//! requests with `503 agent.overloaded` (it fails closed: it never drops audit events to
//! make room), raises `openport_disk_budget_exceeded` and logs an alarm. The admin plane
//! keeps serving, so an operator can export and prune.
//!
//! "Near" is 95% of the configured budget, or less free space on the file system than
//! `min_free_bytes`; requests are admitted again below 90% (and with twice that free), so
//! the state does not flap with every event.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// How much disk the data directory may use (`[store]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskBudget {
    /// The most the data directory may hold; `None`: no budget of its own.
    pub budget_bytes: Option<u64>,
    /// The least free space its file system must keep.
    pub min_free_bytes: u64,
}

/// What one measurement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes the data directory holds (files, recursively).
    pub used: u64,
    /// Bytes free on its file system for an unprivileged writer; `None` if unknown.
    pub free: Option<u64>,
}

/// Whether agent requests are refused for lack of disk.
#[derive(Debug)]
pub struct DiskGuard {
    dir: Option<PathBuf>,
    budget: DiskBudget,
    exceeded: AtomicBool,
}

impl DiskGuard {
    /// Guards `dir` (the store's directory; `None` for an in-memory store).
    pub fn new(dir: Option<PathBuf>, budget: DiskBudget) -> DiskGuard {
        DiskGuard {
            dir,
            budget,
            exceeded: AtomicBool::new(false),
        }
    }

    /// True while agent requests are refused.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Measures the directory and updates the state; says when it changed.
    pub fn check(&self) -> Option<(Usage, Change)> {
        let dir = self.dir.as_deref()?;
        let usage = Usage {
            used: dir_bytes(dir),
            free: free_bytes(dir),
        };
        let was = self.exceeded();
        let now = decide(self.budget, usage, was);
        self.exceeded.store(now, Ordering::Relaxed);
        let change = match (was, now) {
            (false, true) => Change::Exceeded,
            (true, false) => Change::Recovered,
            _ => Change::Same,
        };
        Some((usage, change))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    Exceeded,
    Recovered,
}

/// The rule, with hysteresis: refuse at 95% of the budget (or below the free-space
/// floor); admit again under 90% (and with twice the floor free).
fn decide(budget: DiskBudget, usage: Usage, refusing: bool) -> bool {
    let over_budget = |percent: u64| {
        budget
            .budget_bytes
            .is_some_and(|b| usage.used.saturating_mul(100) >= b.saturating_mul(percent))
    };
    let short_of_space = |factor: u64| {
        usage
            .free
            .is_some_and(|free| free < budget.min_free_bytes.saturating_mul(factor))
    };
    if refusing {
        over_budget(90) || short_of_space(2)
    } else {
        over_budget(95) || short_of_space(1)
    }
}

/// Bytes held by the files under `dir` (their allocated blocks where known, so sparse
/// or preallocated files count as the disk sees them).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt;
                meta.len().max(meta.blocks().saturating_mul(512))
            }
            Err(_) => 0,
        })
        .sum()
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn budget(budget_mib: Option<u64>) -> DiskBudget {
        DiskBudget {
            budget_bytes: budget_mib.map(|m| m * MIB),
            min_free_bytes: 64 * MIB,
        }
    }

    fn usage(used_mib: u64, free_mib: u64) -> Usage {
        Usage {
            used: used_mib * MIB,
            free: Some(free_mib * MIB),
        }
    }

    #[test]
    fn requests_are_refused_near_the_budget_and_admitted_again_well_under_it() {
        let b = budget(Some(100));
        assert!(!decide(b, usage(94, 10_000), false));
        assert!(decide(b, usage(95, 10_000), false));
        assert!(
            decide(b, usage(92, 10_000), true),
            "between 90% and 95% the state holds"
        );
        assert!(!decide(b, usage(89, 10_000), true));
    }

    #[test]
    fn a_full_file_system_refuses_even_without_a_budget() {
        let b = budget(None);
        assert!(!decide(b, usage(5_000, 65), false));
        assert!(decide(b, usage(5_000, 63), false));
        assert!(
            decide(b, usage(5_000, 100), true),
            "under twice the floor the state holds"
        );
        assert!(!decide(b, usage(5_000, 129), true));
    }

    #[test]
    fn the_guard_measures_the_files_it_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("cache")).expect("mkdir");
        std::fs::write(dir.path().join("cache/a"), vec![1u8; 300_000]).expect("write");
        std::fs::write(dir.path().join("b"), vec![1u8; 200_000]).expect("write");
        let guard = DiskGuard::new(
            Some(dir.path().to_path_buf()),
            DiskBudget {
                budget_bytes: Some(400_000),
                min_free_bytes: 0,
            },
        );
        let (usage, change) = guard.check().expect("measured");
        assert!(usage.used >= 500_000, "{usage:?}");
        assert_eq!(change, Change::Exceeded);
        assert!(guard.exceeded());
        std::fs::remove_file(dir.path().join("cache/a")).expect("rm");
        assert_eq!(guard.check().map(|(_, c)| c), Some(Change::Recovered));
    }
}
