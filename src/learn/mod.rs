//! Stage 2, learning: the sparse autoencoder's objective, the optimisers that minimise
//! it, the training driver with its checkpoints, the model file it writes, and the
//! dictionaries compared with it.

pub mod checkpoint;
pub mod dictionary;
pub mod minibatch;
pub mod model;
pub mod optim;
pub mod sae;
pub mod training;
