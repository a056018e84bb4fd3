//! Layer 5: named parameters, layers, the network of a net config, optimizers and schedules.

pub mod config;
pub mod layers;
pub mod network;
pub mod optim;
pub mod params;
pub mod parts;

pub use config::NetConfig;
pub use network::Network;
