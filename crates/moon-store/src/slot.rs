//! Key → slot → shard: the one place that decides which shard owns a key (SPEC §1).
//!
//! The slot is Redis Cluster's: CRC16-XMODEM of the key, or of its hash tag (the part between
//! the first `{` and the next `}` when non-empty), modulo 16384. The owning shard is
//! `slot % shards`. The server, replay and `moon-cli` all call [`shard_for_key`].

/// Number of hash slots.
pub const SLOTS: u16 = 16384;

/// CRC16-XMODEM (poly 0x1021, init 0), as used by Redis Cluster: four bytes at a time from
/// four tables, then the rest a byte at a time. The CRC is linear, so four bytes' effect is
/// the xor of each byte's alone, shifted through the bytes after it: the four lookups are
/// independent, where a byte at a time each waits for the one before (the byte-wise loop was
/// 3.7 % of a 2-shard executor under pipelined GETs, every request's key going through it).
pub fn crc16(data: &[u8]) -> u16 {
    let mut chunks = data.chunks_exact(4);
    let mut crc = 0u16;
    for c in &mut chunks {
        let [hi, lo] = crc.to_be_bytes();
        crc = CRC16_TABLES[3][usize::from(hi ^ c[0])]
            ^ CRC16_TABLES[2][usize::from(lo ^ c[1])]
            ^ CRC16_TABLES[1][usize::from(c[2])]
            ^ CRC16_TABLES[0][usize::from(c[3])];
    }
    chunks.remainder().iter().fold(crc, |crc, &b| {
        (crc << 8) ^ CRC16_TABLES[0][usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// `[0]`: the CRC of each byte value alone (the top byte of the running CRC xor the next byte
/// indexes it); `[k]`: the same byte followed by `k` zero bytes.
const CRC16_TABLES: [[u16; 256]; 4] = {
    let mut tables = [[0u16; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 4 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev << 8) ^ tables[0][(prev >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
};

/// The part of the key that is hashed: its hash tag when it has a non-empty one.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The Redis Cluster slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The shard that owns `key` when there are `shards` shards.
pub fn shard_for_key(key: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    key_slot(key) as usize % shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_cluster_slots() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(shard_for_key(b"foo", 1), 0);
        assert_eq!(shard_for_key(b"foo", 2), 12182 % 2);
    }

    /// CRC16-XMODEM a bit at a time, as the definition reads.
    fn crc16_bitwise(data: &[u8]) -> u16 {
        let mut crc: u16 = 0;
        for &b in data {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    proptest::proptest! {
        #[test]
        fn the_table_gives_the_bitwise_crc(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            proptest::prop_assert_eq!(crc16(&data), crc16_bitwise(&data));
        }
    }
}
