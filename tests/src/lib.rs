//! End-to-end and VM tests of berth
