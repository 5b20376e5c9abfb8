//! Several processes, one job: the few collective operations `sae` needs, over MPI
//! (cargo feature `mpi`, launched by `mpirun`/`srun`) or over a single process.
//!
//! The training objective is a sum over patches, so each rank sums its shard of the
//! patch store and an all-reduce gives every rank the same loss and gradient: all
//! ranks take the same optimiser step and hold the same parameters. Files are shared:
//! rank 0 writes stores, checkpoints, models and tables; other ranks read them after a
//! barrier. Without the feature (or without `mpirun`) everything runs on [`Single`].

use crate::error::Result;

/// The collective operations of a group of processes.
pub trait Comm {
    /// This process's index, `0..size`.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn size(&self) -> usize;
    /// Replaces `v` on every rank by the element-wise sum over all ranks.
    fn sum(&self, v: &mut [f64]);
    /// Waits until every rank got here.
    fn barrier(&self);
    /// Replaces `bytes` on every rank by rank 0's.
    fn broadcast(&self, bytes: &mut Vec<u8>);
    /// True on rank 0, the one that writes shared files.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process alone.
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum(&self, _: &mut [f64]) {}
    fn barrier(&self) {}
    fn broadcast(&self, _: &mut Vec<u8>) {}
}

/// The rows `rank` of `size` takes from `n` items in contiguous, balanced shares.
pub fn share(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let (q, r) = (n / size, n % size);
    let lo = rank * q + rank.min(r);
    lo..lo + q + usize::from(rank < r)
}

/// Broadcasts a value from rank 0 (serialised with bincode).
pub fn broadcast_value<T>(comm: &dyn Comm, value: Option<T>) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut bytes = match (&value, comm.is_root()) {
        (Some(v), true) => bincode::serialize(v).expect("value serialises"),
        _ => Vec::new(),
    };
    comm.broadcast(&mut bytes);
    match value {
        Some(v) if comm.is_root() => Ok(v),
        _ => bincode::deserialize(&bytes).map_err(|e| {
            crate::error::Error::Numeric(format!("rank {}: broadcast value: {e}", comm.rank()))
        }),
    }
}

#[cfg(feature = "mpi")]
mod mpi_comm {
    use mpi::collective::SystemOperation;
    use mpi::traits::*;

    /// The `MPI_COMM_WORLD` of a process started by `mpirun` (or a singleton).
    pub struct Mpi {
        _universe: mpi::environment::Universe,
        world: mpi::topology::SimpleCommunicator,
    }

    impl Mpi {
        /// Initialises MPI; `None` if it was initialised before.
        pub fn init() -> Option<Mpi> {
            let universe = mpi::initialize()?;
            let world = universe.world();
            Some(Mpi {
                _universe: universe,
                world,
            })
        }
    }

    impl super::Comm for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn sum(&self, v: &mut [f64]) {
            if self.size() > 1 {
                let send = v.to_vec();
                self.world
                    .all_reduce_into(&send[..], v, SystemOperation::sum());
            }
        }
        fn barrier(&self) {
            self.world.barrier();
        }
        fn broadcast(&self, bytes: &mut Vec<u8>) {
            let root = self.world.process_at_rank(0);
            let mut len = bytes.len() as u64;
            root.broadcast_into(&mut len);
            bytes.resize(len as usize, 0);
            if len > 0 {
                root.broadcast_into(&mut bytes[..]);
            }
        }
    }
}

#[cfg(feature = "mpi")]
pub use mpi_comm::Mpi;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for (n, size) in [(10, 3), (2, 4), (0, 2), (7, 1)] {
            let mut next = 0;
            for r in 0..size {
                let s = share(n, r, size);
                assert_eq!(s.start, next);
                assert!(s.len() <= n.div_ceil(size));
                next = s.end;
            }
            assert_eq!(next, n);
        }
    }
}
