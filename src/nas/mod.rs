//! Layer 6: ProxylessNAS. Search spaces, the supernet with binary gates, architecture
//! parameters and their gradient and REINFORCE updates, latency tables measured on the
//! searching adapter.

pub mod arch;
pub mod grow;
pub mod latency;
pub mod measure;
pub mod sample;
pub mod space;
pub mod steps;
pub mod supernet;
pub mod warmup;
