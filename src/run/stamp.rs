//! What identifies a run in a results table: the hash of its config, the revision of
//! the build that ran it, and when it started and ended.

use crate::run::config::Config;

/// The git revision `sae` was built from, `-dirty` when its tracked files had changes
/// (empty when it was not built from a git checkout).
pub fn git_rev() -> &'static str {
    env!("SAE_GIT_REV")
}

/// Hash of everything in `cfg` that shapes a run's results: the whole config except
/// its name and where its files go.
pub fn config_hash(cfg: &Config) -> String {
    let mut v = serde_json::json!(cfg);
    if let Some(m) = v.as_object_mut() {
        for k in ["name", "out_dir", "cache_dir", "threads", "max_memory"] {
            m.remove(k);
        }
    }
    format!("{:08x}", crc32fast::hash(v.to_string().as_bytes()))
}

/// The current time, UTC, RFC 3339 to the second.
pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// `secs` since the Unix epoch as `YYYY-MM-DDThh:mm:ssZ`.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn the_config_hash_ignores_where_files_go() {
        let text = "name = \"a\"\n[data]\nformat = \"cifar10\"\npath = \"d\"\n";
        let a: Config = toml::from_str(text).unwrap();
        let mut b = a.clone();
        b.name = "b".into();
        b.out_dir = "elsewhere".into();
        assert_eq!(config_hash(&a), config_hash(&b));
        b.seed += 1;
        assert_ne!(config_hash(&a), config_hash(&b));
    }

    /// Keys added later stay out of the hash at their defaults, so finished runs are
    /// still found; set to anything else, they count.
    #[test]
    fn later_keys_at_their_defaults_leave_the_hash_alone() {
        let text = "name = \"a\"\n[data]\nformat = \"cifar10\"\npath = \"d\"\n";
        let a: Config = toml::from_str(text).unwrap();
        let v = serde_json::json!(a).to_string();
        for key in ["\"scaling\"", "\"precision\"", "\"flip\""] {
            assert!(!v.contains(key), "{key} in {v}");
        }
        let b: Config =
            toml::from_str(&format!("{text}[classify]\nscaling = \"feature\"\n")).unwrap();
        assert_eq!(config_hash(&a), config_hash(&b));
        let c: Config =
            toml::from_str(&format!("{text}[classify]\nscaling = \"global\"\n")).unwrap();
        assert_ne!(config_hash(&a), config_hash(&c));
    }
}
