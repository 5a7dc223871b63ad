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

    /// The same plan in its shortest form: used-up actions dropped,
    /// neighbours with the same task merged, trailing `off`s dropped.
    pub fn simplified(&self) -> FaultPlan {
        FaultPlan {
            site: self.site,
            actions: canonical(&self.actions),
        }
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

/// Count-based fault plans evaluated inside the engine, with their state
/// (each action's remaining count, each site's hit count) held by value.
///
/// fail-rs keeps its counters in a process-wide registry, outside any
/// engine: an explorer that clones and fingerprints engine states cannot
/// branch on them. A `Faults` is cloned with the engine that holds it and
/// hashed into its fingerprint, and answers exactly as fail-rs does for the
/// same plans: the first action whose count is not used up fires (and its
/// count drops by one); `off` or no action left means no fault.
///
/// The chains are kept canonical, so two values are equal exactly when
/// every future evaluation answers the same: used-up actions are dropped,
/// neighbours with the same task merged, nothing is kept after an action
/// without a count (it always fires), and trailing `off`s are dropped (no
/// action left also means no fault). A fired `1*return(EIO)` is then the
/// same as no plan at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults {
    /// By `Site::ALL` index: the actions still to come.
    chains: [Vec<Action>; 4],
    /// By `Site::ALL` index: evaluations so far, saturating at `hit_cap`.
    hits: [u32; 4],
    /// Hits beyond this are not counted, so states that differ only past
    /// it stay equal (an explorer branches on the first `hit_cap` hits).
    hit_cap: u32,
    /// With logging on, the sites evaluated, in order, since the last
    /// [`Faults::take_log`]: how an explorer learns which evaluations one
    /// step made. Empty between an explorer's steps.
    log: Vec<Site>,
    logging: bool,
}

fn site_index(site: Site) -> usize {
    match site {
        Site::TransEnd => 0,
        Site::BgCreate => 1,
        Site::BgInsertItem => 2,
        Site::ExtentTreeLookup => 3,
    }
}

fn canonical(actions: &[Action]) -> Vec<Action> {
    let mut out: Vec<Action> = Vec::new();
    for a in actions {
        if a.count == Some(0) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.task == a.task => {
                last.count = match (last.count, a.count) {
                    (Some(x), Some(y)) => Some(x.saturating_add(y)),
                    _ => None,
                };
            }
            _ => out.push(*a),
        }
        if out.last().is_some_and(|l| l.count.is_none()) {
            break;
        }
    }
    while out.last().is_some_and(|l| l.task == Task::Off) {
        out.pop();
    }
    out
}

impl Faults {
    /// The plans, as [`FailGuard::new`] configures them: a later plan for
    /// a site replaces an earlier one. Hits are not counted.
    pub fn new(plans: &[FaultPlan]) -> Self {
        let mut f = Faults::default();
        for p in plans {
            f.set_plan(p);
        }
        f
    }

    /// Replaces the site's plan, as `fail::cfg` does.
    pub fn set_plan(&mut self, plan: &FaultPlan) {
        self.chains[site_index(plan.site)] = canonical(&plan.actions);
    }

    /// Evaluates a site: fail-rs's answer for the same plan and history.
    pub fn eval(&mut self, site: Site) -> Option<Error> {
        let i = site_index(site);
        if self.hits[i] < self.hit_cap {
            self.hits[i] += 1;
        }
        if self.logging {
            self.log.push(site);
        }
        let chain = &mut self.chains[i];
        // Canonical: the first action, if any, can fire.
        let first = chain.first_mut()?;
        let task = first.task;
        if let Some(n) = &mut first.count {
            *n -= 1;
            if *n == 0 {
                // The rest of a canonical chain is canonical.
                chain.remove(0);
            }
        }
        match task {
            Task::Off => None,
            Task::Return(errno) => Some(Error::injected(errno, site)),
        }
    }

    /// Evaluations of `site` so far, up to the hit cap.
    pub fn hits(&self, site: Site) -> u32 {
        self.hits[site_index(site)]
    }

    /// Counts hits up to `cap` from now on; counts above it are lowered to
    /// it (0: count nothing, forget what was counted).
    pub fn set_hit_cap(&mut self, cap: u32) {
        self.hit_cap = cap;
        for h in &mut self.hits {
            *h = (*h).min(cap);
        }
    }

    /// Records each evaluation's site from now on, for [`Faults::take_log`].
    pub fn set_logging(&mut self, on: bool) {
        self.logging = on;
    }

    /// The sites evaluated since the last call, in order.
    pub fn take_log(&mut self) -> Vec<Site> {
        std::mem::take(&mut self.log)
    }

    /// The cap set by [`Faults::set_hit_cap`] (0 by default).
    pub fn hit_cap(&self) -> u32 {
        self.hit_cap
    }

    /// True when no site can inject a fault any more.
    pub fn spent(&self) -> bool {
        self.chains
            .iter()
            .all(|c| c.iter().all(|a| a.task == Task::Off))
    }
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

    /// Plans from a small deterministic generator: 1 to 4 actions, counts
    /// none or 0..=3, `off` or each errno the site understands.
    fn plans() -> Vec<FaultPlan> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % n
        };
        (0..400)
            .map(|_| {
                let site = Site::ALL[next(4) as usize];
                let actions = (0..1 + next(4))
                    .map(|_| {
                        let count = match next(5) {
                            4 => None,
                            n => Some(n as u32),
                        };
                        let k = next(1 + site.errnos().len() as u64) as usize;
                        let task = match k {
                            0 => Task::Off,
                            k => Task::Return(site.errnos()[k - 1]),
                        };
                        Action { count, task }
                    })
                    .collect();
                FaultPlan { site, actions }
            })
            .collect()
    }

    #[test]
    fn faults_are_canonical() {
        let p = |site, c: &str| FaultPlan::parse(site, c).unwrap();
        let l = Site::ExtentTreeLookup;
        assert_eq!(
            Faults::new(&[p(l, "2*off->1*return(ENOENT)->off")]),
            Faults::new(&[p(l, "1*off->0*return(EIO)->1*off->1*return(ENOENT)")])
        );
        let mut f = Faults::new(&[p(l, "1*return(EIO)->off")]);
        assert_ne!(f, Faults::default());
        assert_eq!(f.eval(l), Some(Error::injected(Errno::EIO, l)));
        assert_eq!(f, Faults::default(), "a fired plan is no plan");
        assert!(f.spent());
        assert_ne!(
            Faults::new(&[p(l, "1*return(EIO)")]),
            Faults::new(&[p(l, "2*return(EIO)")])
        );
        // A later plan for a site replaces an earlier one, as fail::cfg.
        assert_eq!(
            Faults::new(&[p(l, "return(EIO)"), p(l, "1*off->1*return(EIO)")]),
            Faults::new(&[p(l, "1*off->1*return(EIO)")])
        );
        // Values are equal exactly when they answer the same from now on:
        // counts are at most 3 in at most 4 actions, so 20 evaluations
        // reach every plan's endless tail.
        let answers = |p: &FaultPlan| {
            let mut f = Faults::new(std::slice::from_ref(p));
            (0..20).map(|_| f.eval(p.site)).collect::<Vec<_>>()
        };
        let all = plans();
        let mut same_answers = 0;
        for a in &all[..150] {
            for b in all.iter().filter(|b| b.site == a.site) {
                let equal =
                    Faults::new(std::slice::from_ref(a)) == Faults::new(std::slice::from_ref(b));
                let same = answers(a) == answers(b);
                assert_eq!(equal, same, "`{}` vs `{}`", a.config(), b.config());
                same_answers += usize::from(same && a != b);
            }
        }
        assert!(
            same_answers > 100,
            "{same_answers} pairs of different plans agree"
        );
        // Equal values answer the same from now on, whatever comes next.
        for a in plans() {
            let mut f = Faults::new(std::slice::from_ref(&a));
            let mut g = Faults::new(&[a.clone(), a.clone()]);
            for _ in 0..10 {
                assert_eq!(f, g);
                assert_eq!(f.eval(a.site), g.eval(a.site), "{}", a.config());
            }
        }
    }

    #[test]
    fn hit_counts_saturate_at_the_cap() {
        let mut f = Faults::default();
        f.set_hit_cap(2);
        f.set_logging(true);
        for _ in 0..5 {
            assert_eq!(f.eval(Site::TransEnd), None);
        }
        f.eval(Site::BgCreate);
        assert_eq!((f.hits(Site::TransEnd), f.hits(Site::BgCreate)), (2, 1));
        let mut log = vec![Site::TransEnd; 5];
        log.push(Site::BgCreate);
        assert_eq!(f.take_log(), log);
        f.set_hit_cap(0);
        assert_eq!(f.hits(Site::TransEnd), 0);
        f.set_logging(false);
        assert_eq!(f, Faults::default());
    }

    /// The in-engine evaluator answers as fail-rs's registry does, for
    /// every generated plan over twelve evaluations.
    #[cfg(feature = "failpoints")]
    #[test]
    fn faults_answer_as_fail_rs() {
        let mut fired = 0;
        for plan in plans() {
            let mut f = Faults::new(std::slice::from_ref(&plan));
            let _g = FailGuard::new(std::slice::from_ref(&plan)).unwrap();
            for i in 0..12 {
                let (want, got) = (eval(plan.site), f.eval(plan.site));
                assert_eq!(got, want, "`{}`, evaluation {}", plan.config(), i + 1);
                fired += usize::from(got.is_some());
                // Other sites are not configured: no fault there.
                assert_eq!(
                    f.eval(Site::ALL[(i % 3 + 1 + site_index(plan.site)) % 4]),
                    None
                );
            }
        }
        assert!(fired > 500, "{fired} faults: the plans barely inject");
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
