//! How a story is bent so that exactly one known control fires per fault.
//!
//! Each control has its own fault, drawn independently with the configured
//! rate; the rules in [`Faults::draw`] keep faults from tripping each other
//! (a deploy that never finishes cannot also be judged by the controls that
//! trigger on a finished deploy, an emergency change is not CM-01's, …).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// CM-01.
#[derive(Clone, Copy, Debug)]
pub(super) enum ChangeFault {
    NoChangeRequest,
    NeverApproved,
    ApprovedAfterDeploy,
    RejectedAfterApproval,
    OtherService,
}

/// SEC-01.
#[derive(Clone, Copy, Debug)]
pub(super) enum ScanFault {
    SastFailed,
    CriticalFindings,
    NoSca,
    NoSast,
}

/// SOD-01.
#[derive(Clone, Copy, Debug)]
pub(super) enum ReviewFault {
    NoReview,
    SelfApproved,
    ChangesRequested,
}

/// TST-01.
#[derive(Clone, Copy, Debug)]
pub(super) enum TestFault {
    NoTest,
    Failed,
}

/// INT-01.
#[derive(Clone, Copy, Debug)]
pub(super) enum BuildFault {
    DigestNotBuilt,
    NoBuild,
}

/// AC-01: the deploy is run by a contractor who…
#[derive(Clone, Copy, Debug)]
pub(super) enum AccessFault {
    NeverGranted,
    /// …lost the grant one second before the deploy.
    RevokedJustBefore,
    Expired,
}

/// AC-02: a production grant to a new hire that…
#[derive(Clone, Copy, Debug)]
pub(super) enum GrantFault {
    NoRequest,
    RequestNotApproved,
    SelfGranted,
}

/// AC-03: break-glass access that is…
#[derive(Clone, Copy, Debug)]
pub(super) enum ElevationFault {
    NeverRevoked,
    RevokedLate,
}

/// The faults of one story; `None` everywhere is a compliant story.
#[derive(Clone, Debug, Default)]
pub(super) struct Faults {
    /// The production deploy fails (compliant; decided by no finished-deploy control).
    pub fails: bool,
    /// AUD-01: the production deploy never reports an outcome.
    pub hangs: bool,
    /// The change is an emergency change (approved after the deploy).
    pub emergency: bool,
    /// CM-04: … and never approved.
    pub emergency_unapproved: bool,
    pub change: Option<ChangeFault>,
    /// CM-02: the deploy falls outside the approved window.
    pub outside_window: bool,
    /// CM-03: the requester approves their own change.
    pub self_approved_change: bool,
    pub review: Option<ReviewFault>,
    /// SOD-02: the author deploys their own commit.
    pub self_deploy: bool,
    pub test: Option<TestFault>,
    pub scan: Option<ScanFault>,
    pub build: Option<BuildFault>,
    pub access: Option<AccessFault>,
    /// The story grants production access to a new hire (AC-02's trigger).
    pub grant: bool,
    pub grant_fault: Option<GrantFault>,
    /// The story includes a break-glass elevation (AC-03's trigger).
    pub elevation: bool,
    pub elevation_fault: Option<ElevationFault>,
}

impl Faults {
    pub(super) fn draw(rng: &mut ChaCha8Rng, rate: f64) -> Faults {
        let mut f = Faults { fails: rng.random_bool(0.04), ..Faults::default() };
        let hit = |rng: &mut ChaCha8Rng| rng.random_bool(rate);
        f.hangs = !f.fails && hit(rng);
        let finished = !f.fails && !f.hangs;
        f.emergency_unapproved = finished && hit(rng);
        f.emergency = f.emergency_unapproved || rng.random_bool(0.03);
        let normal = !f.emergency;
        f.change = (finished && normal && hit(rng)).then(|| match rng.random_range(0..5) {
            0 => ChangeFault::NoChangeRequest,
            1 => ChangeFault::NeverApproved,
            2 => ChangeFault::ApprovedAfterDeploy,
            3 => ChangeFault::RejectedAfterApproval,
            _ => ChangeFault::OtherService,
        });
        f.outside_window = finished && normal && f.change.is_none() && hit(rng);
        f.self_approved_change = normal && f.change.is_none() && hit(rng);
        f.review = hit(rng).then(|| match rng.random_range(0..3) {
            0 => ReviewFault::NoReview,
            1 => ReviewFault::SelfApproved,
            _ => ReviewFault::ChangesRequested,
        });
        f.self_deploy = finished && hit(rng);
        f.test =
            (finished && hit(rng)).then(|| if rng.random_bool(0.5) { TestFault::NoTest } else { TestFault::Failed });
        f.scan = (finished && hit(rng)).then(|| match rng.random_range(0..4) {
            0 => ScanFault::SastFailed,
            1 => ScanFault::CriticalFindings,
            2 => ScanFault::NoSca,
            _ => ScanFault::NoSast,
        });
        f.build = (finished && hit(rng)).then(|| {
            if rng.random_bool(0.5) {
                BuildFault::DigestNotBuilt
            } else {
                BuildFault::NoBuild
            }
        });
        f.access = (finished && !f.self_deploy && hit(rng)).then(|| match rng.random_range(0..3) {
            0 => AccessFault::NeverGranted,
            1 => AccessFault::RevokedJustBefore,
            _ => AccessFault::Expired,
        });
        f.grant_fault = hit(rng).then(|| match rng.random_range(0..3) {
            0 => GrantFault::NoRequest,
            1 => GrantFault::RequestNotApproved,
            _ => GrantFault::SelfGranted,
        });
        f.grant = f.grant_fault.is_some() || rng.random_bool(0.15);
        f.elevation_fault = hit(rng).then(|| {
            if rng.random_bool(0.5) {
                ElevationFault::NeverRevoked
            } else {
                ElevationFault::RevokedLate
            }
        });
        f.elevation = f.elevation_fault.is_some() || rng.random_bool(0.1);
        f
    }

    /// Whether a human deploys (the author for SOD-02, a contractor for AC-01).
    pub(super) fn forces_human(&self) -> bool {
        self.self_deploy || self.access.is_some()
    }
}
