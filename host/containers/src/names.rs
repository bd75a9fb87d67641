//! Generated container names, `adjective_noun` like docker's.

const ADJECTIVES: [&str; 24] = [
    "agile", "bold", "brave", "calm", "clever", "eager", "fond", "gentle", "happy", "keen", "kind",
    "lucid", "merry", "nimble", "proud", "quiet", "quick", "serene", "sharp", "steady", "sunny",
    "swift", "tender", "witty",
];

const NOUNS: [&str; 24] = [
    "albatross",
    "badger",
    "beacon",
    "buoy",
    "capstan",
    "cutter",
    "dinghy",
    "dolphin",
    "ferry",
    "gull",
    "harbor",
    "heron",
    "jetty",
    "keel",
    "lagoon",
    "lighthouse",
    "mooring",
    "otter",
    "pelican",
    "pier",
    "puffin",
    "schooner",
    "tern",
    "wharf",
];

/// A name that `taken` does not hold: `adjective_noun`, with a number appended when
/// every plain combination is taken.
pub fn generate_name(taken: impl Fn(&str) -> bool) -> String {
    let mut seed = [0u8; 4];
    // A failed read of randomness only makes the first pick predictable.
    let _ = getrandom::fill(&mut seed);
    let start = u32::from_le_bytes(seed) as usize;
    let total = ADJECTIVES.len() * NOUNS.len();
    for round in 0u32.. {
        for i in 0..total {
            let k = (start + i) % total;
            let mut name = format!("{}_{}", ADJECTIVES[k / NOUNS.len()], NOUNS[k % NOUNS.len()]);
            if round > 0 {
                name.push_str(&round.to_string());
            }
            if !taken(&name) {
                return name;
            }
        }
    }
    unreachable!("u32 rounds of names cannot all be taken")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_avoid_taken_ones_and_look_like_docker_names() {
        let mut taken = HashSet::new();
        for _ in 0..(ADJECTIVES.len() * NOUNS.len() + 5) {
            let n = generate_name(|n| taken.contains(n));
            assert!(crate::validate_name(&n).is_ok(), "{n}");
            assert!(taken.insert(n));
        }
    }
}
