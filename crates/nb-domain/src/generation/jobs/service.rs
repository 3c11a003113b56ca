//! Submitting, canceling and waiting for jobs, and the workers that run them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use super::model::{ClaimedJob, JobRequest, JobSettings, MAX_WAIT, NewJob};
use super::ports::JobRepository;
use crate::api_keys::model::AuthenticatedApiKey;
use crate::error::RepositoryError;
use crate::generation::error::GenerateError;
use crate::generation::history::{History, HistoryError, HistoryService};
use crate::generation::model::{GenerationId, GenerationRequest, ImageCount};
use crate::generation::service::{GenerationService, Generations, RecordVia, Standings};
use crate::generation::stored::{GenerationView, HistoryScope};
use crate::money::Usd;

/// A job accepted: its generation (`queued`) and where the caller's quotas and budgets stand.
#[derive(Debug, Clone)]
pub struct SubmittedJob {
    pub generation: GenerationView,
    pub standings: Standings,
}

/// Asynchronous generation as the HTTP adapter uses it.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    /// Checks what a synchronous request would (the conversation, every quota and budget:
    /// one image is reserved), then commits the job. Refused as `generate_images` would be.
    async fn submit(
        &self,
        caller: AuthenticatedApiKey,
        request: GenerationRequest,
    ) -> Result<SubmittedJob, GenerateError>;

    /// Cancels a queued job of the scope's: its reservation is given back. A running or
    /// finished one is `NotCancelable`.
    async fn cancel(
        &self,
        scope: HistoryScope,
        id: GenerationId,
    ) -> Result<GenerationView, HistoryError>;

    /// The generation once it has finished, or as it stands after `at_most` (capped at
    /// [`MAX_WAIT`]).
    async fn wait(
        &self,
        scope: HistoryScope,
        id: GenerationId,
        at_most: Duration,
    ) -> Result<GenerationView, HistoryError>;
}

/// Runs the queue: submissions, cancellations, and this instance's workers.
pub struct JobService {
    generations: Arc<GenerationService>,
    history: HistoryService,
    jobs: Arc<dyn JobRepository>,
    settings: JobSettings,
    /// Wakes an idle worker of this instance when a job is submitted here.
    submitted: Notify,
    /// Wakes the waiters of this instance when a job finishes here.
    finished: Notify,
}

impl fmt::Debug for JobService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How often a waiter looks at a job that may finish on another instance.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// How a job ended its attempt, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptOutcome {
    Succeeded,
    Retried,
    Failed,
    /// Another worker took the job meanwhile (this one's lease ran out).
    LostLease,
}

impl AttemptOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::LostLease => "lost_lease",
        }
    }
}

impl JobService {
    pub fn new(
        generations: Arc<GenerationService>,
        history: HistoryService,
        jobs: Arc<dyn JobRepository>,
        settings: JobSettings,
    ) -> Self {
        Self {
            generations,
            history,
            jobs,
            settings,
            submitted: Notify::new(),
            finished: Notify::new(),
        }
    }

    pub fn settings(&self) -> JobSettings {
        self.settings
    }

    fn now(&self) -> OffsetDateTime {
        self.generations.ports.clock.now()
    }

    /// One worker: takes jobs until `stop` says so, then returns once the job it holds (if
    /// any) has ended. Idle, it waits for a submission on this instance or the poll interval.
    pub async fn work(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            match self.run_next().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "could not take a job from the queue"),
            }
            tokio::select! {
                () = self.submitted.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        // Whoever could stop it is gone: stop.
                        return;
                    }
                }
            }
        }
    }

    /// Fails every job queued longer than `NB_JOB_TIMEOUT_SECONDS` with `queue_timeout`, even
    /// when no worker is free to reach it (a periodic task).
    pub async fn expire_overdue(&self) {
        loop {
            let now = self.now();
            let claimed = self
                .jobs
                .claim_overdue(now - self.settings.timeout, now + self.settings.lease)
                .await;
            match claimed {
                Ok(Some(job)) => {
                    let span = tracing::info_span!("job", generation_id = %job.id);
                    let outcome =
                        tracing::Instrument::instrument(self.fail(&job, "queue_timeout"), span)
                            .await;
                    metrics::counter!("nanobanana_job_attempts_total", "outcome" => outcome.as_str())
                        .increment(1);
                    self.finished.notify_waiters();
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "could not look for overdue jobs");
                    return;
                }
            }
        }
    }

    /// Reports the queue's depth (a gauge), for a periodic task.
    pub async fn report_depth(&self) {
        match self.jobs.depth().await {
            Ok(depth) => metrics::gauge!("nanobanana_jobs_in_queue").set(depth as f64),
            Err(error) => tracing::warn!(%error, "could not read the job queue's depth"),
        }
    }

    /// Takes one job and runs it; `Ok(false)` when none was waiting.
    async fn run_next(&self) -> Result<bool, RepositoryError> {
        let now = self.now();
        let Some(job) = self.jobs.claim(now, now + self.settings.lease).await? else {
            return Ok(false);
        };
        let span = tracing::info_span!("job", generation_id = %job.id, attempt = job.attempt);
        let outcome = tracing::Instrument::instrument(self.run(&job, now), span).await;
        metrics::counter!("nanobanana_job_attempts_total", "outcome" => outcome.as_str())
            .increment(1);
        if outcome != AttemptOutcome::Retried {
            self.finished.notify_waiters();
        }
        Ok(true)
    }

    async fn run(&self, job: &ClaimedJob, now: OffsetDateTime) -> AttemptOutcome {
        let waited = seconds_between(job.created_at, now);
        if job.attempt == 1 {
            metrics::histogram!("nanobanana_job_wait_seconds").record(waited.as_secs_f64());
            if waited > self.settings.timeout {
                return self.fail(job, "queue_timeout").await;
            }
        }
        if job.attempt > self.settings.max_attempts {
            // The last attempt's worker died mid-way (its lease ran out).
            let code = job.last_error_code.clone();
            return self
                .fail(job, code.as_deref().unwrap_or("job_interrupted"))
                .await;
        }
        let request = match job.request.to_request(self.generations.models()) {
            Ok(request) => request,
            Err(unrunnable) => {
                tracing::warn!(%unrunnable, "a job cannot be run");
                return self.fail(job, unrunnable.code()).await;
            }
        };
        let result = self.attempt(job, request).await;
        match result {
            Ok(()) => {
                tracing::info!("job succeeded");
                AttemptOutcome::Succeeded
            }
            Err(error) if error.is_transient() && job.attempt < self.settings.max_attempts => {
                let delay = retry_delay(&error, job.attempt);
                tracing::warn!(%error, retry_in_s = delay.as_secs(), "job attempt failed; it will be retried");
                match self
                    .jobs
                    .retry(job, error.failure_code(), self.now() + delay)
                    .await
                {
                    Ok(true) => AttemptOutcome::Retried,
                    Ok(false) => AttemptOutcome::LostLease,
                    Err(db_error) => {
                        // The lease runs out and the job is taken again.
                        tracing::error!(error = %db_error, "could not put a job back in the queue");
                        AttemptOutcome::Retried
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "job failed");
                self.fail(job, error.failure_code()).await
            }
        }
    }

    /// One attempt at the job's image, its lease renewed while it runs.
    async fn attempt(
        &self,
        job: &ClaimedJob,
        request: GenerationRequest,
    ) -> Result<(), GenerateError> {
        let history = match request.previous {
            Some(previous) => self.generations.conversation(&job.caller, previous).await?,
            None => Vec::new(),
        };
        let via = RecordVia::Job {
            jobs: self.jobs.as_ref(),
            job,
        };
        let run = self
            .generations
            .generate(job.caller, request, &history, via);
        let mut run = std::pin::pin!(run);
        let renew_every = self.settings.lease / 3;
        loop {
            tokio::select! {
                result = &mut run => return result.map(|_| ()),
                () = tokio::time::sleep(renew_every) => {
                    let until = self.now() + self.settings.lease;
                    match self.jobs.renew(job, until).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!("the job's lease was taken by another worker"),
                        Err(error) => tracing::warn!(%error, "could not renew a job's lease"),
                    }
                }
            }
        }
    }

    /// Ends the job as failed, giving its reservation back.
    async fn fail(&self, job: &ClaimedJob, code: &str) -> AttemptOutcome {
        let settlement = job
            .reservation
            .as_ref()
            .map(|reservation| reservation.settlement(0, Usd::ZERO))
            .unwrap_or_default();
        let latency = seconds_between(job.created_at, self.now());
        match self.jobs.fail(job, code, latency, settlement).await {
            Ok(true) => AttemptOutcome::Failed,
            Ok(false) => AttemptOutcome::LostLease,
            Err(error) => {
                tracing::error!(%error, error_code = code, "could not record a failed job; it will be taken again");
                AttemptOutcome::Failed
            }
        }
    }
}

/// How long a job waits before its next attempt: the provider's own wait when it said,
/// else 2, 4, 8… seconds, at most a minute.
fn retry_delay(error: &GenerateError, attempt: u32) -> Duration {
    use crate::generation::error::ProviderError;
    let asked = match error {
        GenerateError::Provider(ProviderError::Busy { retry_after }) => Some(*retry_after),
        GenerateError::Provider(ProviderError::RateLimited { retry_after }) => *retry_after,
        _ => None,
    };
    asked
        .unwrap_or_else(|| Duration::from_secs(1 << attempt.min(6)))
        .min(Duration::from_secs(60))
}

fn seconds_between(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    (to - from).try_into().unwrap_or(Duration::ZERO)
}

#[async_trait]
impl Jobs for JobService {
    #[tracing::instrument(skip_all, fields(generation_id, key_id = %caller.key_id, model = %request.model))]
    async fn submit(
        &self,
        caller: AuthenticatedApiKey,
        request: GenerationRequest,
    ) -> Result<SubmittedJob, GenerateError> {
        let ports = &self.generations.ports;
        if let Some(previous) = request.previous {
            // Checked now, so that a job that cannot run is refused now; read again when it runs.
            self.generations.conversation(&caller, previous).await?;
        }
        let reserved = if caller.quota_applies {
            let ask = GenerationService::ask(&caller, &request, ImageCount::ONE);
            Some(
                ports
                    .quotas
                    .reserve(&caller, ask, ports.clock.now())
                    .await?,
            )
        } else {
            None
        };
        let job = NewJob {
            id: GenerationId(ports.ids.new_id()),
            caller,
            request: JobRequest::of(&request),
            reservation: reserved
                .as_ref()
                .map(|reserved| reserved.reservation.clone()),
            created_at: ports.clock.now(),
        };
        tracing::Span::current().record("generation_id", tracing::field::display(job.id));
        if let Err(error) = self.jobs.submit(&job).await {
            if let Some(reservation) = &job.reservation {
                let settlement = reservation.settlement(0, Usd::ZERO);
                if let Err(settle_error) = ports.quotas.settle(reservation, settlement).await {
                    tracing::error!(error = %settle_error, "could not give back the reservation of a job that was not submitted");
                }
            }
            return Err(error.into());
        }
        metrics::counter!("nanobanana_jobs_submitted_total").increment(1);
        tracing::info!("job submitted");
        self.submitted.notify_one();
        Ok(SubmittedJob {
            generation: GenerationView {
                generation: job.queued_generation(),
                url: None,
            },
            standings: Standings::of(reserved.as_ref()),
        })
    }

    #[tracing::instrument(skip(self, scope))]
    async fn cancel(
        &self,
        scope: HistoryScope,
        id: GenerationId,
    ) -> Result<GenerationView, HistoryError> {
        // Its owner's (and, for a key, that key's) before anything changes.
        let found = self.history.get(scope, id).await?;
        if found.generation.status != crate::generation::stored::GenerationStatus::Queued {
            return Err(HistoryError::NotCancelable {
                status: found.generation.status,
            });
        }
        if self.jobs.cancel(scope.user_id, id).await? {
            tracing::info!("job canceled");
            self.finished.notify_waiters();
        }
        let now = self.history.get(scope, id).await?;
        match now.generation.status {
            crate::generation::stored::GenerationStatus::Canceled => Ok(now),
            status => Err(HistoryError::NotCancelable { status }),
        }
    }

    async fn wait(
        &self,
        scope: HistoryScope,
        id: GenerationId,
        at_most: Duration,
    ) -> Result<GenerationView, HistoryError> {
        let deadline = tokio::time::Instant::now() + at_most.min(MAX_WAIT);
        loop {
            // Registered before reading, so that a finish in between is not missed.
            let finished = self.finished.notified();
            let view = self.history.get(scope, id).await?;
            if view.generation.status.is_finished() || tokio::time::Instant::now() >= deadline {
                return Ok(view);
            }
            let poll = (tokio::time::Instant::now() + WAIT_POLL).min(deadline);
            tokio::select! {
                () = finished => {}
                () = tokio::time::sleep_until(poll) => {}
            }
        }
    }
}
