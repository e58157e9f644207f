#![allow(dead_code)]
pub mod device;
pub mod golden;
