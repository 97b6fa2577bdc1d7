//! Geo commands (GEOADD GEOPOS GEODIST GEOHASH GEOSEARCH GEOSEARCHSTORE and the GEORADIUS
//! family) on sorted sets whose scores are 52-bit geohashes (`value/geo.rs`), on one shard.
//! A store whose destination lives on another shard is run by the server with
//! [`Store::geo_search_source`] as its read and the set written as ZADDs.
//!
//! Logged forms: GEOADD as the ZADD of the scores it computed; GEORADIUS ... STORE and
//! GEOSEARCHSTORE as sent (given the source set each is deterministic, as ZRANGESTORE is).

use bytes::Bytes;
use moon_proto::Frame;

use super::{either, eq, parse_i64, Store};
use crate::args::parse_f64_strict;
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::command::Flags;
use crate::reply::{self, err};
use crate::value::geo::{self, Shape, ShapeKind};
use crate::value::{Value, ZSet};

/// The geo family's rows.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Geo: "geoadd", -5, W, keys(1, 1, 1), ONE, |s, a, now| either(s.geoadd(a, now))),
    command!(Geo: "geopos", -2, R, keys(1, 1, 1), ONE, |s, a, now| either(s.geopos(a, now))),
    command!(Geo: "geodist", -4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.geodist(a, now))),
    command!(Geo: "geohash", -2, R, keys(1, 1, 1), ONE, |s, a, now| either(s.geohash(a, now))),
    command!(Geo: "georadius", -6, W.union(Flags::STORE_KEY), keys(1, 1, 1), COORDINATED, |s, a, now| either(s.geosearch(a, now, Form::Radius))),
    command!(Geo: "georadius_ro", -6, R, keys(1, 1, 1), ONE, |s, a, now| either(s.geosearch(a, now, Form::RadiusRo))),
    command!(Geo: "georadiusbymember", -5, W.union(Flags::STORE_KEY), keys(1, 1, 1), COORDINATED, |s, a, now| either(s.geosearch(a, now, Form::Member))),
    command!(Geo: "georadiusbymember_ro", -5, R, keys(1, 1, 1), ONE, |s, a, now| either(s.geosearch(a, now, Form::MemberRo))),
    command!(Geo: "geosearch", -7, R, keys(1, 1, 1), ONE, |s, a, now| either(s.geosearch(a, now, Form::Search))),
    command!(Geo: "geosearchstore", -8, W, keys(1, 2, 1), COORDINATED, |s, a, now| either(s.geosearch(a, now, Form::SearchStore))),
];

const NO_MEMBER: &str = "ERR could not decode requested zset member";

/// Which command of the search family: where its arguments start and what it accepts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    Radius,
    RadiusRo,
    Member,
    MemberRo,
    Search,
    SearchStore,
}

impl Form {
    /// The form of a search command by name.
    pub fn of(name: &[u8]) -> Option<Form> {
        Some(match name.to_ascii_lowercase().as_slice() {
            b"georadius" => Form::Radius,
            b"georadius_ro" => Form::RadiusRo,
            b"georadiusbymember" => Form::Member,
            b"georadiusbymember_ro" => Form::MemberRo,
            b"geosearch" => Form::Search,
            b"geosearchstore" => Form::SearchStore,
            _ => return None,
        })
    }
    fn is_search(self) -> bool {
        matches!(self, Form::Search | Form::SearchStore)
    }
    fn may_store(self) -> bool {
        matches!(self, Form::Radius | Form::Member)
    }
    fn source(self) -> usize {
        if self == Form::SearchStore {
            2
        } else {
            1
        }
    }
}

fn float(b: &[u8], msg: &'static str) -> Result<f64, Frame> {
    parse_f64_strict(b).ok_or_else(|| err(msg))
}

/// A longitude and a latitude, checked against the geohash's range.
fn lon_lat(args: &[Bytes]) -> Result<[f64; 2], Frame> {
    let lon = float(&args[0], reply::NOT_FLOAT)?;
    let lat = float(&args[1], reply::NOT_FLOAT)?;
    if !(geo::LONG_MIN..=geo::LONG_MAX).contains(&lon)
        || !(geo::LAT_MIN..=geo::LAT_MAX).contains(&lat)
    {
        return Err(Frame::Error(format!(
            "ERR invalid longitude,latitude pair {lon:.6},{lat:.6}"
        )));
    }
    Ok([lon, lat])
}

/// A unit's meters.
fn unit(b: &[u8]) -> Result<f64, Frame> {
    Ok(if eq(b, "m") {
        1.0
    } else if eq(b, "km") {
        1000.0
    } else if eq(b, "ft") {
        0.3048
    } else if eq(b, "mi") {
        1609.34
    } else {
        return Err(err(
            "ERR unsupported unit provided. please use M, KM, FT, MI",
        ));
    })
}

/// `radius unit`: the radius and the unit's meters.
fn radius(args: &[Bytes]) -> Result<(f64, f64), Frame> {
    let r = float(&args[0], "ERR need numeric radius")?;
    if r < 0.0 {
        return Err(err("ERR radius cannot be negative"));
    }
    Ok((r, unit(&args[1])?))
}

fn member_point(z: &ZSet, member: &[u8]) -> Result<[f64; 2], Frame> {
    z.score(member)
        .and_then(geo::point_of)
        .ok_or_else(|| err(NO_MEMBER))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    None,
    Asc,
    Desc,
}

/// A search's arguments, parsed as Redis parses them (errors in Redis's order: some depend
/// on the source set, which FROMMEMBER and GEORADIUSBYMEMBER read).
struct Query {
    shape: Option<Shape>,
    withdist: bool,
    withhash: bool,
    withcoord: bool,
    any: bool,
    order: Order,
    count: usize,
    store: Option<(Bytes, bool)>,
}

impl Query {
    fn parse(args: &[Bytes], form: Form, z: Option<&ZSet>) -> Result<Query, Frame> {
        let mut center = None;
        let mut kind = None;
        let base = match form {
            Form::Radius | Form::RadiusRo => {
                center = Some(lon_lat(&args[2..4])?);
                let (r, c) = radius(&args[4..6])?;
                kind = Some((ShapeKind::Radius(r), c));
                6
            }
            Form::Member | Form::MemberRo => {
                if let Some(z) = z {
                    center = Some(member_point(z, &args[2])?);
                    let (r, c) = radius(&args[3..5])?;
                    kind = Some((ShapeKind::Radius(r), c));
                }
                5
            }
            Form::Search => 2,
            Form::SearchStore => 3,
        };
        let mut q = Query {
            shape: None,
            withdist: false,
            withhash: false,
            withcoord: false,
            any: false,
            order: Order::None,
            count: 0,
            store: (form == Form::SearchStore).then(|| (args[1].clone(), false)),
        };
        let (mut frommember, mut fromloc, mut byradius, mut bybox) = (false, false, false, false);
        let opts = &args[base.min(args.len())..];
        let mut i = 0;
        while i < opts.len() {
            let a = &opts[i];
            let left = opts.len() - i - 1;
            if eq(a, "withdist") {
                q.withdist = true;
            } else if eq(a, "withhash") {
                q.withhash = true;
            } else if eq(a, "withcoord") {
                q.withcoord = true;
            } else if eq(a, "any") {
                q.any = true;
            } else if eq(a, "asc") {
                q.order = Order::Asc;
            } else if eq(a, "desc") {
                q.order = Order::Desc;
            } else if eq(a, "count") && left >= 1 {
                let n = parse_i64(&opts[i + 1]).ok_or_else(|| err(reply::NOT_INTEGER))?;
                if n <= 0 {
                    return Err(err("ERR COUNT must be > 0"));
                }
                q.count = n as usize;
                i += 1;
            } else if (eq(a, "store") || eq(a, "storedist")) && left >= 1 && form.may_store() {
                q.store = Some((opts[i + 1].clone(), eq(a, "storedist")));
                i += 1;
            } else if eq(a, "storedist") && form == Form::SearchStore {
                q.store = Some((args[1].clone(), true));
            } else if eq(a, "frommember") && left >= 1 && form.is_search() && !fromloc {
                if let Some(z) = z {
                    center = Some(member_point(z, &opts[i + 1])?);
                }
                frommember = true;
                i += 1;
            } else if eq(a, "fromlonlat") && left >= 2 && form.is_search() && !frommember {
                center = Some(lon_lat(&opts[i + 1..i + 3])?);
                fromloc = true;
                i += 2;
            } else if eq(a, "byradius") && left >= 2 && form.is_search() && !bybox {
                let (r, c) = radius(&opts[i + 1..i + 3])?;
                kind = Some((ShapeKind::Radius(r), c));
                byradius = true;
                i += 2;
            } else if eq(a, "bybox") && left >= 3 && form.is_search() && !byradius {
                let w = float(&opts[i + 1], "ERR need numeric width")?;
                let h = float(&opts[i + 2], "ERR need numeric height")?;
                if h < 0.0 || w < 0.0 {
                    return Err(err("ERR height or width cannot be negative"));
                }
                let c = unit(&opts[i + 3])?;
                kind = Some((
                    ShapeKind::Box {
                        width: w,
                        height: h,
                    },
                    c,
                ));
                bybox = true;
                i += 3;
            } else {
                return Err(err(reply::SYNTAX));
            }
            i += 1;
        }
        let name = String::from_utf8_lossy(&args[0]);
        if q.store.is_some() && (q.withdist || q.withhash || q.withcoord) {
            return Err(Frame::Error(format!(
                "ERR {} is not compatible with WITHDIST, WITHHASH and WITHCOORD options",
                if form == Form::SearchStore {
                    "GEOSEARCHSTORE"
                } else {
                    "STORE option in GEORADIUS"
                }
            )));
        }
        if form.is_search() && !(frommember || fromloc) {
            return Err(Frame::Error(format!(
                "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {name}"
            )));
        }
        if form.is_search() && !(byradius || bybox) {
            return Err(Frame::Error(format!(
                "ERR exactly one of BYRADIUS and BYBOX can be specified for {name}"
            )));
        }
        if q.any && q.count == 0 {
            return Err(err("ERR the ANY argument requires COUNT argument"));
        }
        if q.count != 0 && q.order == Order::None && !q.any {
            q.order = Order::Asc;
        }
        if let (Some(center), Some((kind, conversion))) = (center, kind) {
            q.shape = Some(Shape {
                center,
                conversion,
                kind,
            });
        }
        Ok(q)
    }
}

/// One point found by a search.
struct Found {
    member: Bytes,
    dist: f64,
    score: f64,
    point: [f64; 2],
}

/// The points of `z` inside `shape`, box by box in Redis's order, stopping at `limit` (ANY).
fn search(z: &ZSet, shape: &Shape, limit: usize) -> Vec<Found> {
    let mut found = Vec::new();
    let full = |found: &Vec<Found>| limit > 0 && found.len() >= limit;
    for b in shape.boxes() {
        if full(&found) {
            break;
        }
        let (min, max) = geo::score_range(b);
        let start = z.count_before(|s, _| s < min);
        for (m, s) in z.iter_from(start, false) {
            if s >= max {
                break;
            }
            if let Some(point) = geo::point_of(s) {
                if let Some(dist) = shape.contains(point) {
                    found.push(Found {
                        member: Bytes::copy_from_slice(m),
                        dist,
                        score: s,
                        point,
                    });
                }
            }
            if full(&found) {
                break;
            }
        }
    }
    found
}

/// What a search returns (sorted, cut to COUNT, distances in the query's unit): the reply's
/// items.
fn results(z: &ZSet, q: &Query) -> Vec<Found> {
    let Some(shape) = q.shape else {
        return Vec::new();
    };
    let mut found = search(z, &shape, if q.any { q.count } else { 0 });
    match q.order {
        Order::Asc => found.sort_by(|a, b| a.dist.total_cmp(&b.dist)),
        Order::Desc => found.sort_by(|a, b| b.dist.total_cmp(&a.dist)),
        Order::None => {}
    }
    if q.count > 0 {
        found.truncate(q.count);
    }
    for f in &mut found {
        f.dist /= shape.conversion;
    }
    found
}

fn reply_of(found: Vec<Found>, q: &Query) -> Frame {
    let options = q.withdist || q.withhash || q.withcoord;
    Frame::Array(
        found
            .into_iter()
            .map(|f| {
                if !options {
                    return Frame::Bulk(f.member);
                }
                let mut item = vec![Frame::Bulk(f.member)];
                if q.withdist {
                    item.push(Frame::Bulk(Bytes::from(geo::format_distance(f.dist))));
                }
                if q.withhash {
                    item.push(Frame::Integer(f.score as i64));
                }
                if q.withcoord {
                    item.push(Frame::Array(vec![
                        Frame::HumanDouble(f.point[0]),
                        Frame::HumanDouble(f.point[1]),
                    ]));
                }
                Frame::Array(item)
            })
            .collect(),
    )
}

/// The members and scores a storing search writes to its destination.
fn to_store(found: Vec<Found>, storedist: bool) -> Vec<(Bytes, f64)> {
    found
        .into_iter()
        .map(|f| (f.member, if storedist { f.dist } else { f.score }))
        .collect()
}

impl Store {
    fn geoadd(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let mut at = 2;
        let (mut nx, mut xx) = (false, false);
        while at < args.len() {
            let a = &args[at];
            if eq(a, "nx") {
                nx = true;
            } else if eq(a, "xx") {
                xx = true;
            } else if !eq(a, "ch") {
                break;
            }
            at += 1;
        }
        if !(args.len() - at).is_multiple_of(3) || (xx && nx) {
            return Err(err(reply::SYNTAX));
        }
        let mut zadd = Vec::with_capacity(at + (args.len() - at) / 3 * 2);
        zadd.push(Bytes::from_static(b"ZADD"));
        zadd.extend(args[1..at].iter().cloned());
        for t in args[at..].chunks(3) {
            let [lon, lat] = lon_lat(&t[..2])?;
            let score = geo::score_of(lon, lat).ok_or_else(|| err(reply::NOT_FLOAT))?;
            zadd.push(Bytes::from((score as u64).to_string()));
            zadd.push(t[2].clone());
        }
        // ZADD with the computed scores: that is what is logged and announced.
        self.zadd(&zadd, now)
    }

    fn geopos(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let z = self.zset_ref(&args[1], now)?;
        Ok(Frame::Array(
            args[2..]
                .iter()
                .map(
                    |m| match z.and_then(|z| z.score(m)).and_then(geo::point_of) {
                        Some([lon, lat]) => {
                            Frame::Array(vec![Frame::HumanDouble(lon), Frame::HumanDouble(lat)])
                        }
                        None => Frame::NullArray,
                    },
                )
                .collect(),
        ))
    }

    fn geodist(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let to_meters = match args.len() {
            4 => 1.0,
            5 => unit(&args[4])?,
            _ => return Err(err(reply::SYNTAX)),
        };
        let Some(z) = self.zset_ref(&args[1], now)? else {
            return Ok(Frame::Null);
        };
        let points = (
            z.score(&args[2]).and_then(geo::point_of),
            z.score(&args[3]).and_then(geo::point_of),
        );
        Ok(match points {
            (Some([x1, y1]), Some([x2, y2])) => Frame::Bulk(Bytes::from(geo::format_distance(
                geo::distance(x1, y1, x2, y2) / to_meters,
            ))),
            _ => Frame::Null,
        })
    }

    fn geohash(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let z = self.zset_ref(&args[1], now)?;
        Ok(Frame::Array(
            args[2..]
                .iter()
                .map(
                    |m| match z.and_then(|z| z.score(m)).and_then(geo::standard_geohash) {
                        Some(h) => Frame::Bulk(Bytes::from(h)),
                        None => Frame::Null,
                    },
                )
                .collect(),
        ))
    }

    fn geosearch(&mut self, args: &[Bytes], now: u64, form: Form) -> Result<Frame, Frame> {
        let z = self.zset_ref(&args[form.source()], now)?;
        let q = Query::parse(args, form, z)?;
        let found = z.map(|z| results(z, &q));
        match (&q.store, found) {
            (None, found) => Ok(reply_of(found.unwrap_or_default(), &q)),
            (Some((dst, storedist)), found) => {
                let dst = dst.clone();
                let items = to_store(found.unwrap_or_default(), *storedist);
                self.replace_with(args, &dst, items, now)
            }
        }
    }

    /// What a storing search (`args`: GEORADIUS ... STORE, GEORADIUSBYMEMBER ... STORE,
    /// GEOSEARCHSTORE) would write to its destination, read without changing anything: the
    /// read half of one whose destination lives on another shard. A missing source writes
    /// nothing (the destination is deleted).
    pub fn geo_search_source(&self, args: &[Bytes], now: u64) -> Result<Vec<(Bytes, f64)>, Frame> {
        let form = args
            .first()
            .and_then(|n| Form::of(n))
            .ok_or_else(|| err(reply::SYNTAX))?;
        let key = &args[form.source()];
        let z = match self.type_at(key, now) {
            None => None,
            Some(_) => match self.ks.peek(key, now).map(|e| &e.value) {
                None => None,
                Some(Value::ZSet(z)) => Some(z),
                Some(_) => return Err(err(reply::WRONGTYPE)),
            },
        };
        let q = Query::parse(args, form, z)?;
        let storedist = q.store.as_ref().is_some_and(|(_, d)| *d);
        Ok(z.map(|z| to_store(results(z, &q), storedist))
            .unwrap_or_default())
    }
}
