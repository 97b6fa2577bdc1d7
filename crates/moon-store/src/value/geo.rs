//! Geohashes as Redis computes them: a point is a sorted-set score, the 52-bit interleaving of
//! its latitude and longitude cut into 2^26 steps each (latitude limited to ±85.05112878°, the
//! Web Mercator range), and a search walks the nine geohash boxes around the centre at a
//! precision chosen from the radius, then keeps the points truly inside the shape.
//!
//! Every formula and every constant is Redis's, in Redis's order of operations, so a
//! coordinate, a distance or a search result is the same double — and prints the same —
//! on Moon as on Redis 7.0 (the trigonometry is the platform's libm on both).

/// Latitude limits (EPSG:900913).
pub const LAT_MIN: f64 = -85.051_128_78;
pub const LAT_MAX: f64 = 85.051_128_78;
pub const LONG_MIN: f64 = -180.0;
pub const LONG_MAX: f64 = 180.0;
/// Steps per coordinate of a stored point: 26 × 2 = 52 bits, exact in a double.
pub const STEP_MAX: u8 = 26;

const D_R: f64 = std::f64::consts::PI / 180.0;
const EARTH_RADIUS_IN_METERS: f64 = 6_372_797.560_856;
const MERCATOR_MAX: f64 = 20_037_726.37;

fn deg_rad(ang: f64) -> f64 {
    ang * D_R
}

fn rad_deg(ang: f64) -> f64 {
    ang / D_R
}

/// A geohash: `step` bits of each coordinate, interleaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Hash {
    pub bits: u64,
    pub step: u8,
}

impl Hash {
    fn is_zero(self) -> bool {
        self.bits == 0 && self.step == 0
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Range {
    min: f64,
    max: f64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Area {
    longitude: Range,
    latitude: Range,
}

const WGS84: (Range, Range) = (
    Range {
        min: LONG_MIN,
        max: LONG_MAX,
    },
    Range {
        min: LAT_MIN,
        max: LAT_MAX,
    },
);

fn interleave(x: u32, y: u32) -> u64 {
    const B: [u64; 5] = [
        0x5555_5555_5555_5555,
        0x3333_3333_3333_3333,
        0x0F0F_0F0F_0F0F_0F0F,
        0x00FF_00FF_00FF_00FF,
        0x0000_FFFF_0000_FFFF,
    ];
    const S: [u32; 5] = [1, 2, 4, 8, 16];
    let (mut x, mut y) = (u64::from(x), u64::from(y));
    for i in (0..5).rev() {
        x = (x | (x << S[i])) & B[i];
        y = (y | (y << S[i])) & B[i];
    }
    x | (y << 1)
}

fn deinterleave(interleaved: u64) -> u64 {
    const B: [u64; 6] = [
        0x5555_5555_5555_5555,
        0x3333_3333_3333_3333,
        0x0F0F_0F0F_0F0F_0F0F,
        0x00FF_00FF_00FF_00FF,
        0x0000_FFFF_0000_FFFF,
        0x0000_0000_FFFF_FFFF,
    ];
    const S: [u32; 6] = [0, 1, 2, 4, 8, 16];
    let (mut x, mut y) = (interleaved, interleaved >> 1);
    for i in 0..6 {
        x = (x | (x >> S[i])) & B[i];
        y = (y | (y >> S[i])) & B[i];
    }
    x | (y << 32)
}

fn encode_in(
    long_range: Range,
    lat_range: Range,
    longitude: f64,
    latitude: f64,
    step: u8,
) -> Option<Hash> {
    if step == 0 || step > 32 {
        return None;
    }
    if !(LONG_MIN..=LONG_MAX).contains(&longitude) || !(LAT_MIN..=LAT_MAX).contains(&latitude) {
        return None;
    }
    if latitude < lat_range.min
        || latitude > lat_range.max
        || longitude < long_range.min
        || longitude > long_range.max
    {
        return None;
    }
    let scale = (1u64 << step) as f64;
    let lat_offset = (latitude - lat_range.min) / (lat_range.max - lat_range.min) * scale;
    let long_offset = (longitude - long_range.min) / (long_range.max - long_range.min) * scale;
    Some(Hash {
        bits: interleave(lat_offset as u32, long_offset as u32),
        step,
    })
}

/// The geohash of a point at `step` bits per coordinate (`None` outside the valid range).
pub fn encode(longitude: f64, latitude: f64, step: u8) -> Option<Hash> {
    encode_in(WGS84.0, WGS84.1, longitude, latitude, step)
}

fn decode_in(long_range: Range, lat_range: Range, hash: Hash) -> Option<Area> {
    if hash.is_zero() {
        return None;
    }
    let sep = deinterleave(hash.bits);
    let (ilato, ilono) = (sep as u32, (sep >> 32) as u32);
    let steps = (1u64 << hash.step) as f64;
    let lat_scale = lat_range.max - lat_range.min;
    let long_scale = long_range.max - long_range.min;
    Some(Area {
        latitude: Range {
            min: lat_range.min + (f64::from(ilato) / steps) * lat_scale,
            max: lat_range.min + ((f64::from(ilato) + 1.0) / steps) * lat_scale,
        },
        longitude: Range {
            min: long_range.min + (f64::from(ilono) / steps) * long_scale,
            max: long_range.min + ((f64::from(ilono) + 1.0) / steps) * long_scale,
        },
    })
}

/// The 52-bit sorted-set score of a point.
pub fn score_of(longitude: f64, latitude: f64) -> Option<f64> {
    encode(longitude, latitude, STEP_MAX).map(|h| align52(h) as f64)
}

/// The point a score stands for: the centre of its box, `[longitude, latitude]`.
pub fn point_of(score: f64) -> Option<[f64; 2]> {
    let area = decode_in(
        WGS84.0,
        WGS84.1,
        Hash {
            bits: score as u64,
            step: STEP_MAX,
        },
    )?;
    let lon = ((area.longitude.min + area.longitude.max) / 2.0).clamp(LONG_MIN, LONG_MAX);
    let lat = ((area.latitude.min + area.latitude.max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    Some([lon, lat])
}

/// GEOHASH's 11-character standard geohash of a score (re-encoded over ±90° latitude).
pub fn standard_geohash(score: f64) -> Option<String> {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let [lon, lat] = point_of(score)?;
    let hash = encode_in(
        Range {
            min: -180.0,
            max: 180.0,
        },
        Range {
            min: -90.0,
            max: 90.0,
        },
        lon,
        lat,
        26,
    )
    .unwrap_or_default();
    Some(
        (0..11)
            .map(|i| {
                let idx = if i == 10 {
                    0
                } else {
                    ((hash.bits >> (52 - (i + 1) * 5)) & 0x1f) as usize
                };
                ALPHABET[idx] as char
            })
            .collect(),
    )
}

fn align52(hash: Hash) -> u64 {
    hash.bits << (52 - u32::from(hash.step) * 2)
}

/// The score range `[min, max)` of the points inside a geohash box.
pub fn score_range(hash: Hash) -> (f64, f64) {
    let min = align52(hash);
    let max = align52(Hash {
        bits: hash.bits + 1,
        step: hash.step,
    });
    (min as f64, max as f64)
}

fn move_x(hash: &mut Hash, d: i8) {
    if d == 0 {
        return;
    }
    let mut x = hash.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = hash.bits & 0x5555_5555_5555_5555;
    let zz = 0x5555_5555_5555_5555u64 >> (64 - u32::from(hash.step) * 2);
    if d > 0 {
        x = x.wrapping_add(zz + 1);
    } else {
        x |= zz;
        x = x.wrapping_sub(zz + 1);
    }
    x &= 0xaaaa_aaaa_aaaa_aaaau64 >> (64 - u32::from(hash.step) * 2);
    hash.bits = x | y;
}

fn move_y(hash: &mut Hash, d: i8) {
    if d == 0 {
        return;
    }
    let x = hash.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let mut y = hash.bits & 0x5555_5555_5555_5555;
    let zz = 0xaaaa_aaaa_aaaa_aaaau64 >> (64 - u32::from(hash.step) * 2);
    if d > 0 {
        y = y.wrapping_add(zz + 1);
    } else {
        y |= zz;
        y = y.wrapping_sub(zz + 1);
    }
    y &= 0x5555_5555_5555_5555u64 >> (64 - u32::from(hash.step) * 2);
    hash.bits = x | y;
}

fn moved(hash: Hash, dx: i8, dy: i8) -> Hash {
    let mut h = hash;
    move_x(&mut h, dx);
    move_y(&mut h, dy);
    h
}

/// What a search is bounded by, around `center` (`[longitude, latitude]`), its sizes in the
/// unit `conversion` converts to meters.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub center: [f64; 2],
    pub conversion: f64,
    pub kind: ShapeKind,
}

#[derive(Clone, Copy, Debug)]
pub enum ShapeKind {
    Radius(f64),
    Box { width: f64, height: f64 },
}

/// The distance in meters between two points (haversine on Redis's Earth radius).
pub fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let lon1r = deg_rad(lon1);
    let lon2r = deg_rad(lon2);
    let v = ((lon2r - lon1r) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let lat1r = deg_rad(lat1);
    let lat2r = deg_rad(lat2);
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    // Rounding can take `a` just past 1 for antipodal points, where asin is NaN (Redis then
    // stores or compares a NaN); half the circumference is the distance.
    2.0 * EARTH_RADIUS_IN_METERS * a.min(1.0).sqrt().asin()
}

fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS_IN_METERS * (deg_rad(lat2) - deg_rad(lat1)).abs()
}

impl Shape {
    /// The distance from the centre to `point`, if the point is inside the shape.
    pub fn contains(&self, point: [f64; 2]) -> Option<f64> {
        let [x1, y1] = self.center;
        let [x2, y2] = point;
        match self.kind {
            ShapeKind::Radius(r) => {
                let d = distance(x1, y1, x2, y2);
                (d <= r * self.conversion).then_some(d)
            }
            ShapeKind::Box { width, height } => {
                let (width_m, height_m) = (width * self.conversion, height * self.conversion);
                if lat_distance(y2, y1) > height_m / 2.0 {
                    return None;
                }
                if distance(x2, y2, x1, y2) > width_m / 2.0 {
                    return None;
                }
                Some(distance(x1, y1, x2, y2))
            }
        }
    }

    /// `[min lon, min lat, max lon, max lat]` around the centre.
    fn bounding_box(&self) -> [f64; 4] {
        let [longitude, latitude] = self.center;
        let (h, w) = match self.kind {
            ShapeKind::Radius(r) => (r, r),
            ShapeKind::Box { width, height } => (height / 2.0, width / 2.0),
        };
        let height = self.conversion * h;
        let width = self.conversion * w;
        let lat_delta = rad_deg(height / EARTH_RADIUS_IN_METERS);
        let long_delta_top =
            rad_deg(width / EARTH_RADIUS_IN_METERS / deg_rad(latitude + lat_delta).cos());
        let long_delta_bottom =
            rad_deg(width / EARTH_RADIUS_IN_METERS / deg_rad(latitude - lat_delta).cos());
        let southern = latitude < 0.0;
        [
            if southern {
                longitude - long_delta_bottom
            } else {
                longitude - long_delta_top
            },
            latitude - lat_delta,
            if southern {
                longitude + long_delta_bottom
            } else {
                longitude + long_delta_top
            },
            latitude + lat_delta,
        ]
    }

    /// The geohash boxes to search, in Redis's order (centre, N, S, E, W, NE, NW, SE, SW),
    /// the useless ones left out and a box equal to the one searched before it skipped.
    pub fn boxes(&self) -> Vec<Hash> {
        let [min_lon, min_lat, max_lon, max_lat] = self.bounding_box();
        let [longitude, latitude] = self.center;
        let radius_meters = match self.kind {
            ShapeKind::Radius(r) => r,
            ShapeKind::Box { width, height } => {
                ((width / 2.0) * (width / 2.0) + (height / 2.0) * (height / 2.0)).sqrt()
            }
        } * self.conversion;
        let mut steps = estimate_steps(radius_meters, latitude);
        let around = |steps: u8| {
            let hash = encode(longitude, latitude, steps).unwrap_or_default();
            let area = decode_in(WGS84.0, WGS84.1, hash).unwrap_or_default();
            (hash, area)
        };
        let (mut hash, mut area) = around(steps);
        let decoded = |h: Hash| decode_in(WGS84.0, WGS84.1, h).unwrap_or_default();
        let decrease = decoded(moved(hash, 0, 1)).latitude.max < max_lat
            || decoded(moved(hash, 0, -1)).latitude.min > min_lat
            || decoded(moved(hash, 1, 0)).longitude.max < max_lon
            || decoded(moved(hash, -1, 0)).longitude.min > min_lon;
        if steps > 1 && decrease {
            steps -= 1;
            (hash, area) = around(steps);
        }
        // centre, north, south, east, west, north-east, north-west, south-east, south-west
        let mut boxes = [
            hash,
            moved(hash, 0, 1),
            moved(hash, 0, -1),
            moved(hash, 1, 0),
            moved(hash, -1, 0),
            moved(hash, 1, 1),
            moved(hash, -1, 1),
            moved(hash, 1, -1),
            moved(hash, -1, -1),
        ];
        if steps >= 2 {
            let mut zero = |ids: [usize; 3]| {
                for i in ids {
                    boxes[i] = Hash::default();
                }
            };
            if area.latitude.min < min_lat {
                zero([2, 8, 7]);
            }
            if area.latitude.max > max_lat {
                zero([1, 5, 6]);
            }
            if area.longitude.min < min_lon {
                zero([4, 8, 6]);
            }
            if area.longitude.max > max_lon {
                zero([3, 7, 5]);
            }
        }
        let mut out = Vec::with_capacity(9);
        let mut last: usize = 0;
        for (i, b) in boxes.iter().enumerate() {
            if b.is_zero() {
                continue;
            }
            // Redis compares with the last box searched, except when that was the centre.
            if last != 0 && *b == boxes[last] {
                continue;
            }
            out.push(*b);
            last = i;
        }
        out
    }
}

fn estimate_steps(mut range_meters: f64, lat: f64) -> u8 {
    if range_meters == 0.0 {
        return 26;
    }
    let mut step: i32 = 1;
    while range_meters < MERCATOR_MAX {
        range_meters *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u8
}

/// A distance as Redis prints one: rounded to 4 decimals (`llrint(d * 10000)`).
pub fn format_distance(d: f64) -> String {
    if d == 0.0 {
        return "0.0000".into();
    }
    let v = (d * 10000.0).round_ties_even() as i64;
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:04}", a / 10000, a % 10000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis 7.0.15's answers for Palermo and Catania (its documentation's example).
    #[test]
    fn points_scores_and_distances_are_redis_s() {
        let palermo = score_of(13.361389, 38.115556).unwrap();
        let catania = score_of(15.087269, 37.502669).unwrap();
        assert_eq!(palermo, 3479099956230698.0);
        assert_eq!(catania, 3479447370796909.0);
        let [lon, lat] = point_of(palermo).unwrap();
        assert_eq!(
            moon_proto::frame::format_human_double(lon),
            "13.36138933897018433"
        );
        assert_eq!(
            moon_proto::frame::format_human_double(lat),
            "38.11555639549629859"
        );
        let [clon, clat] = point_of(catania).unwrap();
        assert_eq!(
            format_distance(distance(lon, lat, clon, clat) / 1000.0),
            "166.2742"
        );
        assert_eq!(standard_geohash(palermo).unwrap(), "sqc8b49rny0");
        assert_eq!(standard_geohash(catania).unwrap(), "sqdtr74hyu0");
        assert!(score_of(200.0, 10.0).is_none());
        assert!(score_of(10.0, 85.1).is_none());
    }

    #[test]
    fn distances_print_as_redis_rounds_them() {
        assert_eq!(format_distance(0.0), "0.0000");
        assert_eq!(format_distance(0.775), "0.7750");
        assert_eq!(format_distance(190.44242984775784), "190.4424");
        assert_eq!(format_distance(56.441_257_870_158_2), "56.4413");
    }
}
