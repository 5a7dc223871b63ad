//! Failpoint sites of the bgfuzz engine, typed fault plans, and a scoped guard
//! over fail-rs's global registry.
//!
//! fail-rs keeps one process-wide registry. Tests run in parallel, so every
//! configuration goes through [`FailGuard`], which serializes its holders and
//! removes what it configured when dropped: no failpoint leaks from one run
//! into another.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

/// Linux errno values the model produces. Kept to the ones btrfs returns on
/// these paths, so a report reads like the kernel's (`error -2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Errno {
    ENOENT,
    EIO,
    ENOMEM,
    EINVAL,
    ENOSPC,
    EROFS,
    /// A second balance while one runs (`btrfs_ioctl_balance`).
    EINPROGRESS,
}

impl Errno {
    pub const ALL: [Errno; 7] = [
        Errno::ENOENT,
        Errno::EIO,
        Errno::ENOMEM,
        Errno::EINVAL,
        Errno::ENOSPC,
        Errno::EROFS,
        Errno::EINPROGRESS,
    ];

    /// The positive errno number (`-ENOENT` is printed as `-2`).
    pub fn code(self) -> i32 {
        match self {
            Errno::ENOENT => 2,
            Errno::EIO => 5,
            Errno::ENOMEM => 12,
            Errno::EINVAL => 22,
            Errno::ENOSPC => 28,
            Errno::EROFS => 30,
            Errno::EINPROGRESS => 115,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Errno::ENOENT => "ENOENT",
            Errno::EIO => "EIO",
            Errno::ENOMEM => "ENOMEM",
            Errno::EINVAL => "EINVAL",
            Errno::ENOSPC => "ENOSPC",
            Errno::EROFS => "EROFS",
            Errno::EINPROGRESS => "EINPROGRESS",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Errno {
    type Err = FailpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Errno::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| FailpointError::UnknownErrno(s.to_string()))
    }
}

/// The places in the engine where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// `__btrfs_end_transaction` of a handle with pending bgs, before phase 2.
    TransEnd,
    /// `btrfs_make_block_group` (phase 1).
    BgCreate,
    /// The block group item insertion of phase 2.
    BgInsertItem,
    /// The extent-tree search in `write_one_cache_group`.
    ExtentTreeLookup,
}

impl Site {
    pub const ALL: [Site; 4] = [
        Site::TransEnd,
        Site::BgCreate,
        Site::BgInsertItem,
        Site::ExtentTreeLookup,
    ];

    /// The fail-rs name, also the name used in scripts.
    pub fn name(self) -> &'static str {
        match self {
            Site::TransEnd => "trans_end",
            Site::BgCreate => "bg_create",
            Site::BgInsertItem => "bg_insert_item",
            Site::ExtentTreeLookup => "extent_tree_lookup",
        }
    }

    /// The errnos the engine gives a meaning to at this site (docs/model.md's
    /// table). Anything else is refused when the plan is parsed, so a typo
    /// cannot silently become a no-op.
    pub fn errnos(self) -> &'static [Errno] {
        match self {
            Site::TransEnd => &[Errno::EIO, Errno::ENOMEM],
            Site::BgCreate => &[Errno::ENOSPC, Errno::ENOMEM],
            Site::BgInsertItem => &[Errno::EIO, Errno::ENOSPC],
            Site::ExtentTreeLookup => &[Errno::ENOENT, Errno::EIO],
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Site {
    type Err = FailpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Site::ALL
            .into_iter()
            .find(|site| site.name() == s)
            .ok_or_else(|| FailpointError::UnknownSite(s.to_string()))
    }
}

/// Where an error came from: that is how an oracle tells a justified abort
/// (a fault was injected) from an unjustified one (the model raised it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    Injected(Site),
    Model,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Injected(site) => write!(f, "injected at failpoint {site}"),
            Origin::Model => f.write_str("raised by the model"),
        }
    }
}

/// An errno with its provenance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Error {
    pub errno: Errno,
    pub origin: Origin,
}

impl Error {
    pub fn model(errno: Errno) -> Self {
        Error {
            errno,
            origin: Origin::Model,
        }
    }
    pub fn injected(errno: Errno, site: Site) -> Self {
        Error {
            errno,
            origin: Origin::Injected(site),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-{} ({})", self.errno, self.origin)
    }
}

/// What one action of a plan does when it triggers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    Off,
    Return(Errno),
}

/// One `[cnt*]task` of a fail-rs action chain. Probabilities (`p%`) are
/// refused: fail-rs draws them from a thread RNG, which breaks replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Action {
    pub count: Option<u32>,
    pub task: Task,
}

/// A count-based fault plan for one site: `2*off->1*return(ENOENT)->off`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FaultPlan {
    pub site: Site,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailpointError {
    #[error("unknown failpoint site `{0}` (known: trans_end, bg_create, bg_insert_item, extent_tree_lookup)")]
    UnknownSite(String),
    #[error("unknown errno `{0}` (known: ENOENT, EIO, ENOMEM, EINVAL, ENOSPC, EROFS)")]
    UnknownErrno(String),
    #[error("errno {errno} means nothing at failpoint {site} (it understands: {allowed})")]
    ErrnoNotAtSite {
        site: Site,
        errno: Errno,
        allowed: String,
    },
    #[error(
        "probability actions (`{0}`) are not deterministic; use a count such as `1*return(EIO)`"
    )]
    Probability(String),
    #[error("bad failpoint action `{action}`: {why}")]
    BadAction { action: String, why: String },
    #[error("empty failpoint config")]
    Empty,
    #[error("fail-rs refused config for {site}: {why}")]
    Registry { site: Site, why: String },
}

impl FaultPlan {
    /// Parses fail-rs's action grammar, restricted to `[cnt*]off` and
    /// `[cnt*]return(ERRNO)`, the only tasks with a meaning in a
    /// deterministic single-threaded model.
    pub fn parse(site: Site, config: &str) -> Result<Self, FailpointError> {
        let config = config.trim();
        if config.is_empty() {
            return Err(FailpointError::Empty);
        }
        let actions = config
            .split("->")
            .map(|a| parse_action(site, a.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FaultPlan { site, actions })
    }

    /// The plan in fail-rs's grammar; parsing it gives the same plan.
    pub fn config(&self) -> String {
        let parts: Vec<String> = self.actions.iter().map(|a| a.to_string()).collect();
        parts.join("->")
    }

    /// True if some action can inject a fault.
    pub fn injects(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a.task, Task::Return(_)))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.count {
            write!(f, "{n}*")?;
        }
        match self.task {
            Task::Off => f.write_str("off"),
            Task::Return(e) => write!(f, "return({e})"),
        }
    }
}

fn parse_action(site: Site, text: &str) -> Result<Action, FailpointError> {
    let bad = |why: &str| FailpointError::BadAction {
        action: text.to_string(),
        why: why.to_string(),
    };
    if text.contains('%') {
        return Err(FailpointError::Probability(text.to_string()));
    }
    let (count, rest) = match text.split_once('*') {
        Some((n, rest)) => {
            let n: u32 = n
                .trim()
                .parse()
                .map_err(|_| bad("the count before `*` is not a number"))?;
            (Some(n), rest.trim())
        }
        None => (None, text),
    };
    let task = if rest == "off" {
        Task::Off
    } else if let Some(arg) = rest
        .strip_prefix("return(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let errno: Errno = arg.trim().parse()?;
        if !site.errnos().contains(&errno) {
            let allowed: Vec<&str> = site.errnos().iter().map(|e| e.name()).collect();
            return Err(FailpointError::ErrnoNotAtSite {
                site,
                errno,
                allowed: allowed.join(", "),
            });
        }
        Task::Return(errno)
    } else if rest == "return" {
        return Err(bad("`return` needs an errno, e.g. `return(EIO)`"));
    } else {
        return Err(bad("only `off` and `return(ERRNO)` are supported"));
    };
    Ok(Action { count, task })
}

static REGISTRY_LOCK: Mutex<()> = Mutex::new(());

/// Exclusive use of fail-rs's registry for the lifetime of the guard. It
/// configures the given plans and removes every site on drop (also on
/// unwind), so counters start fresh for each run.
pub struct FailGuard {
    _lock: MutexGuard<'static, ()>,
}

impl FailGuard {
    pub fn new(plans: &[FaultPlan]) -> Result<Self, FailpointError> {
        // A test that panicked while holding the lock leaves it poisoned; the
        // registry is still cleared by that guard's drop, so go on.
        let lock = REGISTRY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let guard = FailGuard { _lock: lock };
        clear_sites();
        for plan in plans {
            fail::cfg(plan.site.name(), &plan.config()).map_err(|why| {
                FailpointError::Registry {
                    site: plan.site,
                    why,
                }
            })?;
        }
        Ok(guard)
    }
}

impl Drop for FailGuard {
    fn drop(&mut self) {
        clear_sites();
    }
}

fn clear_sites() {
    for site in Site::ALL {
        fail::remove(site.name());
    }
}

/// Whether failpoints are compiled in (the `failpoints` feature).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Evaluates a site. `Some(err)` when an action `return(ERRNO)` triggers.
/// Callers must hold a [`FailGuard`]; the engine only calls this when its
/// run was given plans.
pub fn eval(site: Site) -> Option<Error> {
    let arg = eval_raw(site.name())?;
    // The guard only ever configures `return(ERRNO)` with a known errno.
    let errno = arg.as_deref().and_then(|a| a.parse::<Errno>().ok())?;
    Some(Error::injected(errno, site))
}

#[allow(unused_variables)]
fn eval_raw(name: &str) -> Option<Option<String>> {
    fail::fail_point!(name, Some);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_count_plans() {
        let p = FaultPlan::parse(Site::ExtentTreeLookup, "2*off->1*return(ENOENT)->off").unwrap();
        assert_eq!(p.actions.len(), 3);
        assert_eq!(p.actions[1].task, Task::Return(Errno::ENOENT));
        assert_eq!(p.config(), "2*off->1*return(ENOENT)->off");
        assert_eq!(FaultPlan::parse(p.site, &p.config()).unwrap(), p);
    }

    #[test]
    fn refuses_probability_unknown_site_and_errno() {
        assert!(matches!(
            FaultPlan::parse(Site::TransEnd, "50%return(EIO)"),
            Err(FailpointError::Probability(_))
        ));
        assert!(matches!(
            "nope".parse::<Site>(),
            Err(FailpointError::UnknownSite(_))
        ));
        assert!(matches!(
            FaultPlan::parse(Site::TransEnd, "return(EFOO)"),
            Err(FailpointError::UnknownErrno(_))
        ));
        assert!(matches!(
            FaultPlan::parse(Site::TransEnd, "return(ENOENT)"),
            Err(FailpointError::ErrnoNotAtSite { .. })
        ));
        assert!(matches!(
            FaultPlan::parse(Site::TransEnd, "sleep(10)"),
            Err(FailpointError::BadAction { .. })
        ));
        assert!(matches!(
            FaultPlan::parse(Site::TransEnd, "x*off"),
            Err(FailpointError::BadAction { .. })
        ));
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn guard_configures_counts_and_clears_on_drop() {
        let plan = FaultPlan::parse(Site::BgCreate, "1*off->1*return(ENOMEM)").unwrap();
        {
            let _g = FailGuard::new(&[plan]).unwrap();
            assert_eq!(eval(Site::BgCreate), None);
            assert_eq!(
                eval(Site::BgCreate),
                Some(Error::injected(Errno::ENOMEM, Site::BgCreate))
            );
            assert_eq!(eval(Site::BgCreate), None);
        }
        let _g = FailGuard::new(&[]).unwrap();
        assert_eq!(eval(Site::BgCreate), None);
    }
}
