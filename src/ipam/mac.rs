//! MAC addresses: parsing, display, and the locally-administered unicast addresses IPAM makes.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    pub fn from_octets(octets: [u8; 6]) -> MacAddr {
        MacAddr(octets)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// A random unicast address with the locally-administered bit set.
    pub fn random_local(rng: &mut impl Rng) -> MacAddr {
        let mut octets: [u8; 6] = rng.gen();
        octets[0] = (octets[0] | 0x02) & !0x01;
        MacAddr(octets)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {text:?}: expected six hex pairs like 02:00:00:0a:10:05")]
pub struct MacParseError {
    pub text: String,
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(text: &str) -> Result<MacAddr, MacParseError> {
        let error = || MacParseError { text: text.to_string() };
        let separator = if text.contains('-') { '-' } else { ':' };
        let mut octets = [0u8; 6];
        let mut count = 0;
        for part in text.split(separator) {
            if count == 6 || part.len() != 2 {
                return Err(error());
            }
            octets[count] = u8::from_str_radix(part, 16).map_err(|_| error())?;
            count += 1;
        }
        if count != 6 {
            return Err(error());
        }
        Ok(MacAddr(octets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_lowercase() {
        let mac: MacAddr = "00:00:00:F0:DB:25".parse().unwrap();
        assert_eq!(mac.to_string(), "00:00:00:f0:db:25");
        assert_eq!(
            "02-00-00-00-00-01".parse::<MacAddr>().unwrap().to_string(),
            "02:00:00:00:00:01"
        );
        for bad in [
            "",
            "00:00:00:00:00",
            "00:00:00:00:00:00:00",
            "0:00:00:00:00:00",
            "zz:00:00:00:00:00",
            "00:00:00:00:00:0g",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn random_addresses_are_local_unicast() {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let mac = MacAddr::random_local(&mut rng);
            assert!(!mac.is_multicast());
            assert_eq!(mac.octets()[0] & 0x02, 0x02);
        }
    }
}
