//! Stage 2, learning: the sparse autoencoder's objective, the optimisers that minimise
//! it, the training driver with its checkpoints, and the model file it writes.

pub mod checkpoint;
pub mod minibatch;
pub mod model;
pub mod optim;
pub mod sae;
pub mod training;
