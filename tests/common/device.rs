//! The device the device-generic tests run on: `CACE_TEST_DEVICE`, any name `cace --device`
//! accepts (`cpu` when unset). A name this build cannot run fails the test with the reason;
//! it never falls back to the CPU.

use burn::tensor::Device;

pub fn name() -> String {
    std::env::var("CACE_TEST_DEVICE").unwrap_or_else(|_| "cpu".to_string())
}

pub fn test_device() -> Device {
    let name = name();
    cace_net::device::parse_device(&name)
        .unwrap_or_else(|e| panic!("CACE_TEST_DEVICE={name}: {e:#}"))
}
