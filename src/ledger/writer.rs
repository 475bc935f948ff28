//! The single writer with group commit.
//!
//! Requests queue on a bounded channel. The writer thread takes everything queued (up to
//! `batch_commands_max`), decides each command against the committed state, appends all the
//! resulting events in one durable write transaction, applies them to the projections, and only
//! then answers every waiter. One fsync is shared by the whole batch, so throughput grows with
//! load while latency stays near one commit.
//!
//! Commands in one batch are decided against the same committed state, so they must not
//! depend on each other: a command that touches what an earlier command of the batch writes
//! (see `ConflictKeys`) waits for the next batch. Two refreshes of one token therefore never
//! share a batch, and exactly one of them wins.
//!
//! In cluster mode a batch's round through Raft takes milliseconds, so the leader's writer keeps
//! several batches in flight (`raft_batches_in_flight`): it decides the next batch while earlier
//! ones replicate, chained on the last one's tail (seq, hash, time), and it holds their conflict
//! keys until they are applied, so a command of the next batch never depends on an event the
//! projections do not hold yet: the same rule as within one batch. An exclusive command waits
//! until nothing is in flight; after any batch fails, nothing more is decided until every batch
//! in flight has its answer and the proposer has confirmed the projections again (`ready`).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};

use super::codec;
use super::index;
use super::reader::LedgerReader;
use super::store::{Append, Store};
use super::token_ids::TokenIdScheme;
use crate::clock::Clock;
use crate::config::WriterConfig;
use crate::domain::command::{Answered, Command, Outcome, Rejection};
use crate::domain::{ConflictKeys, ConflictSeed, Context, FreshIds, Recorded, State, decide};

/// Cluster mode: how the leader's writer commits a sealed batch instead of appending it itself
/// (implemented by `replication::proposer::Proposer`; the ledger names no Raft type). The batch
/// is applied to the projections by the cluster's state machine, on this node too, before its
/// proposal answers.
pub trait ReplicatedCommit: Send + Sync {
    /// Ok once this node may decide: it leads, and its projections hold every committed event;
    /// answers the term it leads in (what `propose` is told a batch was decided in).
    fn ready(&self) -> Result<u64, ReplicatedRefusal>;
    /// Proposes the sealed envelopes (in seq order), decided in `term`, after every batch
    /// proposed before; blocks only until the proposal is taken. The proposal answers the head
    /// seq once the batch is committed and applied here.
    fn propose(&self, envelopes: Vec<Vec<u8>>, term: u64) -> Proposal;
}

/// The outcome of one replicated proposal (see [`ReplicatedCommit::propose`]).
pub type Proposal = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, ReplicatedRefusal>> + Send>>;

/// Why a replicated commit did not happen here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicatedRefusal {
    /// This node does not lead: nothing of the batch was committed.
    NotLeader,
    /// The batch may or may not commit (leadership lost mid-way, no quorum in time).
    Unknown,
    /// Raft on this node stopped (a storage error, a divergence): no more writes here.
    Stopped,
}

/// Where the writer's batches go.
enum Commit {
    /// Single node: appended to this store, then applied to the projections by the writer.
    Local(Store),
    /// Cluster mode: through Raft; the state machine appends and applies on every node.
    Replicated(Replicated),
}

/// The cluster side of the writer: where batches go, and those proposed and not yet answered.
struct Replicated {
    commit: Arc<dyn ReplicatedCommit>,
    /// Oldest first; they commit in this order or not at all (each continues the one before).
    in_flight: VecDeque<InFlight>,
    /// Most batches in flight at once (1: each batch waits for the one before).
    in_flight_max: usize,
    /// Set when a batch in flight failed: nothing is decided until none is left in flight.
    failed_in_flight: bool,
    /// Waits on the proposals and the queue together (the writer is not a runtime thread);
    /// Raft's own futures run on the server's runtime.
    waiter: tokio::runtime::Runtime,
}

/// A replicated batch proposed and not yet answered.
struct InFlight {
    proposal: Proposal,
    staged: Vec<Staged>,
    /// Its commands' conflict keys, held until it is applied.
    locks: BatchLocks,
    /// The chain after this batch, which the next batch continues.
    tail: Tail,
    /// The term it was decided in.
    term: u64,
    events: usize,
    started: Instant,
}

/// Where the chain ends: what the next batch is sealed after.
#[derive(Clone, Copy)]
struct Tail {
    seq: u64,
    hash: [u8; 32],
    recorded_at_ms: i64,
}

/// Why a typed submission ([`LedgerHandle::submit_as`]) did not give its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitFailure<R> {
    /// The command's decider refused it (events may still have been recorded, e.g. a failed
    /// sign-in or a burned code).
    Refused(R),
    /// The ledger cannot take writes (it failed or is stopping): the command is not known
    /// to be recorded, so the caller may retry.
    Unavailable,
}

/// The ledger cannot take writes: it failed (I/O error, full disk) or is shutting down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the ledger is not accepting writes")]
pub struct SubmitError;

pub type Reply = Result<Outcome, Rejection>;

struct Job {
    command: Command,
    transaction_id: String,
    reply: oneshot::Sender<Result<Reply, SubmitError>>,
}

enum Message {
    Job(Box<Job>),
    /// Forget expired sign-in records and authorization codes (the token tables have their
    /// own purge thread, `purge.rs`).
    Purge,
    Stop(oneshot::Sender<()>),
}

/// Counters the writer keeps for readiness and metrics.
#[derive(Debug, Default)]
pub struct WriterStatus {
    /// Set after the first failed commit; the ledger then refuses writes until restarted.
    pub failed: AtomicBool,
    pub stopped: AtomicBool,
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    pub events: AtomicU64,
    pub commit_micros_total: AtomicU64,
    pub deferred_commands: AtomicU64,
    /// Told about every batch (metrics), once set.
    pub observer: BatchObserver,
}

/// The handle requests use to reach the writer. Cheap to clone.
#[derive(Clone)]
pub struct LedgerHandle {
    sender: mpsc::Sender<Message>,
    status: Arc<WriterStatus>,
    /// This ledger's token-id scheme, for minting ids that index well.
    token_ids: Arc<TokenIdScheme>,
    /// The clock the writer stamps batches with; handlers read the same one.
    clock: Arc<dyn Clock>,
    /// The seq of the last event committed and applied; followers of the live event stream
    /// wait on it and then read the committed events from the store.
    head: watch::Receiver<u64>,
    reader: LedgerReader,
}

impl LedgerHandle {
    /// Starts the writer thread on the system clock; it owns `store` from now on.
    pub fn spawn(store: Store, state: Arc<RwLock<State>>, config: WriterConfig) -> std::io::Result<Self> {
        Self::spawn_with_clock(store, state, config, crate::clock::system())
    }

    /// Starts the writer thread, which reads time from `clock` and owns `store` from now on.
    pub fn spawn_with_clock(
        store: Store,
        state: Arc<RwLock<State>>,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let reader = store.reader();
        let token_ids = store.token_ids().clone();
        Self::start(Commit::Local(store), reader, token_ids, state, config, clock)
    }

    /// Cluster mode: a writer that commits through `replicated` (see [`ReplicatedCommit`]). The
    /// store stays with the cluster's state machine; `reader` and `token_ids` are its.
    pub fn spawn_replicated(
        replicated: Arc<dyn ReplicatedCommit>,
        reader: LedgerReader,
        token_ids: Arc<TokenIdScheme>,
        state: Arc<RwLock<State>>,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let commit = Commit::Replicated(Replicated {
            commit: replicated,
            in_flight: VecDeque::new(),
            in_flight_max: config.raft_batches_in_flight.max(1),
            failed_in_flight: false,
            waiter: tokio::runtime::Builder::new_current_thread().build()?,
        });
        Self::start(commit, reader, token_ids, state, config, clock)
    }

    /// This handle with `head` as its committed head: in a cluster the state machine applies
    /// every batch (on followers, batches this writer never saw), so it publishes the head.
    pub fn with_committed_head(mut self, head: watch::Receiver<u64>) -> Self {
        self.head = head;
        self
    }

    fn start(
        commit: Commit,
        reader: LedgerReader,
        token_ids: Arc<TokenIdScheme>,
        state: Arc<RwLock<State>>,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let status = Arc::new(WriterStatus::default());
        let (head_sender, head) = watch::channel(state.read().head.seq);
        let writer = Writer {
            conflict_seed: ConflictSeed(u64::from_le_bytes(crate::crypto::random_bytes())),
            commit,
            token_ids: token_ids.clone(),
            clock: clock.clone(),
            state,
            receiver,
            status: status.clone(),
            batch_max: config.batch_commands_max.max(1),
            clock_watch: ClockWatch { skew_max_ms: config.clock_skew_max_ms, skewed: false },
            head: head_sender,
        };
        super::purge::spawn(&writer.state.read().shared_tables(), clock.clone())?;
        std::thread::Builder::new().name("ledger-writer".into()).spawn(move || writer.run())?;
        Ok(Self { sender, status, token_ids, clock, head, reader })
    }

    /// The clock the writer stamps batches with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The seq of the last committed and applied event, updated after every batch. The
    /// sender goes away when the writer stops, which ends every `changed()` wait.
    pub fn committed_head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    /// Read-only access to the stored events and index, for audit queries.
    pub fn reader(&self) -> &LedgerReader {
        &self.reader
    }

    /// Decides `command` in the writer and waits until its events are durable and applied.
    pub async fn submit(&self, command: Command, transaction_id: String) -> Result<Reply, SubmitError> {
        if !self.is_writable() {
            return Err(SubmitError);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { command, transaction_id, reply };
        self.sender.send(Message::Job(Box::new(job))).await.map_err(|_| SubmitError)?;
        answer.await.map_err(|_| SubmitError)?
    }

    /// Submits `command` and gives its decider's typed answer: see [`Answered`].
    pub async fn submit_as<C: Answered>(
        &self,
        command: C,
        transaction_id: String,
    ) -> Result<C::Answer, SubmitFailure<C::Refusal>> {
        match self.submit(command.into_command(), transaction_id).await {
            Ok(outcome) => C::answer(outcome).map_err(SubmitFailure::Refused),
            Err(SubmitError) => Err(SubmitFailure::Unavailable),
        }
    }

    /// Requests waiting for the writer, not yet taken into a batch.
    pub fn queued(&self) -> usize {
        self.sender.max_capacity().saturating_sub(self.sender.capacity())
    }

    pub fn is_writable(&self) -> bool {
        !self.status.failed.load(Ordering::Acquire) && !self.status.stopped.load(Ordering::Acquire)
    }

    pub fn token_ids(&self) -> &Arc<TokenIdScheme> {
        &self.token_ids
    }

    /// Ids for what one command may mint at `now_ms` (see `token_ids`: time-ordered for the
    /// index, masked so they tell nothing), from 24 random bytes.
    pub fn fresh_ids(&self, now_ms: i64, random: [u8; 24]) -> FreshIds {
        let half = |i: usize| -> [u8; 8] {
            random.get(i * 8..i * 8 + 8).and_then(|part| part.try_into().ok()).unwrap_or_default()
        };
        FreshIds {
            access: self.token_ids.token_id(now_ms, half(0)),
            refresh: self.token_ids.token_id(now_ms, half(1)),
            family: super::token_ids::family_id(now_ms, half(2)),
        }
    }

    pub fn status(&self) -> &WriterStatus {
        &self.status
    }

    /// Asks the writer to purge expired state; returns at once.
    pub fn request_purge(&self) {
        let _ = self.sender.try_send(Message::Purge);
    }

    /// Finishes queued work, closes the ledger file and stops the writer thread.
    pub async fn stop(&self) {
        let (done, finished) = oneshot::channel();
        if self.sender.send(Message::Stop(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

struct Writer {
    /// Seeds the conflict-key hash; random per process, so callers cannot craft collisions.
    conflict_seed: ConflictSeed,
    commit: Commit,
    token_ids: Arc<TokenIdScheme>,
    clock: Arc<dyn Clock>,
    state: Arc<RwLock<State>>,
    receiver: mpsc::Receiver<Message>,
    status: Arc<WriterStatus>,
    batch_max: usize,
    /// Reports a clock that falls behind the ledger head.
    clock_watch: ClockWatch,
    /// Published after each batch is applied (see `LedgerHandle::committed_head`).
    head: watch::Sender<u64>,
}

/// One command waiting for its batch to commit.
struct Staged {
    reply: oneshot::Sender<Result<Reply, SubmitError>>,
    outcome: Reply,
}

/// One event of the batch, with what `apply` needs after the commit.
struct Pending {
    event: crate::proto::ledger::Event,
    transaction_id: String,
    seq: u64,
    hash: [u8; 32],
}

/// What woke a writer waiting on both the queue and the oldest batch in flight.
enum Woken {
    Message(Option<Message>),
    Answered(Result<u64, ReplicatedRefusal>),
}

impl Writer {
    fn run(mut self) {
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut stop: Option<oneshot::Sender<()>> = None;
        // The last batch decided nothing new: every queued command waits on a batch in flight.
        let mut stalled = false;
        let mut closed = false;
        loop {
            let in_flight = self.in_flight();
            // Stopping, or every handle is gone: decide what is queued, then end.
            let ending = stop.is_some() || closed;
            if in_flight > 0 && (stalled || !self.may_decide_more() || (queue.is_empty() && ending)) {
                self.settle_oldest();
                stalled = false;
                continue;
            }
            if !ending && (queue.is_empty() || !self.worth_deciding(queue.len())) {
                let message = if in_flight == 0 {
                    self.receiver.blocking_recv()
                } else {
                    match self.wait_message_or_answer() {
                        Woken::Message(message) => message,
                        Woken::Answered(result) => {
                            self.answer_oldest(result);
                            continue;
                        }
                    }
                };
                match message {
                    Some(message) => self.take(message, &mut queue, &mut stop),
                    None if queue.is_empty() => break,
                    None => closed = true,
                }
            }
            while queue.len() < self.batch_max {
                match self.receiver.try_recv() {
                    Ok(message) => self.take(message, &mut queue, &mut stop),
                    Err(_) => break,
                }
            }
            self.settle_answered();
            // A stop may have arrived with the messages just taken.
            let ending = stop.is_some() || closed;
            if queue.is_empty() {
                if ending && self.in_flight() == 0 {
                    break;
                }
                continue;
            }
            if !ending && !self.worth_deciding(queue.len()) {
                continue;
            }
            stalled = !self.run_batch(&mut queue);
        }
        while self.in_flight() > 0 {
            self.settle_oldest();
        }
        self.status.stopped.store(true, Ordering::Release);
        // Jobs that raced with the stop are refused; the store closes when `self` drops.
        self.receiver.close();
        while let Ok(message) = self.receiver.try_recv() {
            if let Message::Job(job) = message {
                let _ = job.reply.send(Err(SubmitError));
            }
        }
        for job in queue {
            let _ = job.reply.send(Err(SubmitError));
        }
        if let Commit::Local(store) = self.commit {
            store.close();
        }
        drop(self.head);
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    fn take(&mut self, message: Message, queue: &mut VecDeque<Job>, stop: &mut Option<oneshot::Sender<()>>) {
        match message {
            Message::Job(job) if self.status.failed.load(Ordering::Acquire) => {
                let _ = job.reply.send(Err(SubmitError));
            }
            Message::Job(job) => queue.push_back(*job),
            Message::Purge => self.state.write().purge_expired(self.clock.now_ms()),
            Message::Stop(done) => {
                self.status.stopped.store(true, Ordering::Release);
                *stop = Some(done);
            }
        }
    }

    /// Replicated batches proposed and not yet answered (always 0 on a single node).
    fn in_flight(&self) -> usize {
        match &self.commit {
            Commit::Local(_) => 0,
            Commit::Replicated(replicated) => replicated.in_flight.len(),
        }
    }

    /// Whether another batch may be decided while those in flight replicate.
    fn may_decide_more(&self) -> bool {
        match &self.commit {
            Commit::Local(_) => true,
            Commit::Replicated(replicated) => {
                !replicated.failed_in_flight
                    && replicated.in_flight.len() < replicated.in_flight_max
                    && !replicated.in_flight.iter().any(|batch| batch.locks.exclusive)
            }
        }
    }

    /// Whether `queued` commands make a batch worth deciding now. With nothing in flight, always;
    /// while batches replicate, only once the queue holds a full batch or at least as many
    /// commands as the newest batch in flight. Every batch costs every node an entry, an fsync
    /// and an apply, so proposing the first command that arrives would trade a few large
    /// batches for many small ones, and a cluster whose nodes are short of CPU would issue
    /// less (measured on two cores at 64 clients: 12 commands per batch instead of 32, and 15%
    /// less issuance).
    /// With this rule batches do not shrink, and the next one is still on its way before the
    /// last one is answered.
    fn worth_deciding(&self, queued: usize) -> bool {
        match &self.commit {
            Commit::Local(_) => true,
            Commit::Replicated(replicated) => match replicated.in_flight.back() {
                None => true,
                Some(newest) => queued >= self.batch_max || queued >= newest.staged.len(),
            },
        }
    }

    /// Blocks until the oldest batch in flight has its answer, and gives it.
    fn settle_oldest(&mut self) {
        let Commit::Replicated(replicated) = &mut self.commit else { return };
        let Some(oldest) = replicated.in_flight.front_mut() else { return };
        let result = replicated.waiter.block_on(&mut oldest.proposal);
        self.answer_oldest(result);
    }

    /// Gives the answers of the batches in flight that have one already, oldest first.
    fn settle_answered(&mut self) {
        loop {
            let Commit::Replicated(replicated) = &mut self.commit else { return };
            let Some(oldest) = replicated.in_flight.front_mut() else { return };
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            let std::task::Poll::Ready(result) = oldest.proposal.as_mut().poll(&mut context) else { return };
            self.answer_oldest(result);
        }
    }

    /// Blocks until a message arrives or the oldest batch in flight has its answer.
    fn wait_message_or_answer(&mut self) -> Woken {
        let Commit::Replicated(replicated) = &mut self.commit else {
            return Woken::Message(self.receiver.blocking_recv());
        };
        let Some(oldest) = replicated.in_flight.front_mut() else {
            return Woken::Message(self.receiver.blocking_recv());
        };
        let receiver = &mut self.receiver;
        replicated.waiter.block_on(async {
            tokio::select! {
                biased;
                result = &mut oldest.proposal => Woken::Answered(result),
                message = receiver.recv() => Woken::Message(message),
            }
        })
    }

    /// Answers the callers of the oldest batch in flight with `result`, its proposal's outcome.
    fn answer_oldest(&mut self, result: Result<u64, ReplicatedRefusal>) {
        let Commit::Replicated(replicated) = &mut self.commit else { return };
        let Some(batch) = replicated.in_flight.pop_front() else { return };
        // After a failure nothing more is decided until none is left in flight: the batches
        // after it continue its chain, so they fail with it, or commit, and it with them.
        replicated.failed_in_flight =
            (replicated.failed_in_flight || result.is_err()) && !replicated.in_flight.is_empty();
        match result {
            Ok(_) => {
                let elapsed = batch.started.elapsed();
                self.status.commit_micros_total.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
                self.head.send_replace(batch.tail.seq);
                self.finish(batch.staged, batch.events, Some(elapsed));
            }
            Err(refusal) => {
                // Nothing is acknowledged; the state machine applied nothing here (NotLeader),
                // or will apply it if it commits (Unknown): the callers retry with their
                // transactionId, which the retry index answers once.
                if refusal == ReplicatedRefusal::Stopped {
                    tracing::error!("raft stopped on this node; refusing writes until restart");
                    self.status.failed.store(true, Ordering::Release);
                }
                for item in batch.staged {
                    let _ = item.reply.send(Err(SubmitError));
                }
            }
        }
    }

    /// Counts a batch whose events are committed and applied, and answers its callers.
    fn finish(&self, staged: Vec<Staged>, events: usize, commit: Option<std::time::Duration>) {
        self.status.batches.fetch_add(1, Ordering::Relaxed);
        self.status.commands.fetch_add(staged.len() as u64, Ordering::Relaxed);
        self.status.events.fetch_add(events as u64, Ordering::Relaxed);
        self.status.observer.notify(BatchStats { commands: staged.len(), events, commit });
        for item in staged {
            let _ = item.reply.send(Ok(item.outcome));
        }
    }

    /// Decides, commits and applies up to `batch_max` queued jobs; jobs that conflict with an
    /// earlier job of the batch, or of a batch in flight, stay at the front of the queue for the
    /// next one. In cluster mode the batch is proposed and left in flight. Answers false when it
    /// decided nothing because every job waits on a batch in flight.
    fn run_batch(&mut self, queue: &mut VecDeque<Job>) -> bool {
        let mut term = 0;
        if let Commit::Replicated(replicated) = &self.commit {
            match replicated.commit.ready() {
                Ok(now) if replicated.in_flight.front().is_some_and(|batch| batch.term != now) => {
                    // The term moved under the batches in flight: they will fail; settle them.
                    return false;
                }
                Ok(now) => term = now,
                Err(_) if !replicated.in_flight.is_empty() => return false,
                Err(refusal) => {
                    // Not the leader (or not yet current): nothing is decided, the callers hear
                    // that the ledger takes no writes here (SPEC 8: fail closed).
                    if refusal == ReplicatedRefusal::Stopped {
                        tracing::error!("raft stopped on this node; refusing writes until restart");
                        self.status.failed.store(true, Ordering::Release);
                    }
                    let take = queue.len().min(self.batch_max);
                    for job in queue.drain(..take) {
                        let _ = job.reply.send(Err(SubmitError));
                    }
                    return true;
                }
            }
        }
        let held = match &self.commit {
            Commit::Local(_) => None,
            Commit::Replicated(replicated) => Some(&replicated.in_flight),
        };
        let mut staged: Vec<Staged> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut appends: Vec<Append> = Vec::new();
        let mut deferred: Vec<Job> = Vec::new();
        let mut locks = BatchLocks::default();
        let recorded_at_ms;
        let tail;
        {
            // Only this thread changes the state (directly, or through the batches it proposes),
            // so what it reads here stays true until the batch is applied below, except for what
            // the batches in flight write, whose keys are held; readers keep going meanwhile.
            let state = self.state.read();
            let after = match self.last_in_flight() {
                Some(last) => last,
                None => Tail { seq: state.head.seq, hash: state.head.hash, recorded_at_ms: state.head.recorded_at_ms },
            };
            // Decisions use the clock; the record's time never goes back (replay, cutoffs and
            // time search rely on that). The two differ only while the clock is behind the
            // ledger head, e.g. after a step forward and back: then expiries still count from
            // the clock, not from a time that may lie years ahead.
            let now_ms = self.clock.now_ms();
            recorded_at_ms = now_ms.max(after.recorded_at_ms);
            self.clock_watch.observe(now_ms, after.recorded_at_ms);
            let mut seq = after.seq;
            let mut prev_hash = after.hash;
            // A cluster sends its envelopes in canonical form (every build applies them alike);
            // a single node stores them in the compact stored form.
            let seal = match self.commit {
                Commit::Local(_) => codec::seal,
                Commit::Replicated(_) => codec::seal_canonical,
            };
            if seq == 0 && matches!(self.commit, Commit::Replicated(_)) {
                // A cluster's first batch opens its chain: seq 1 is the same `LedgerCreated`
                // on every node, made through Raft like everything after it.
                let event = super::created_event();
                seq += 1;
                let sealed = seal(&prev_hash, seq, recorded_at_ms, "", &event);
                prev_hash = sealed.hash;
                // A cluster's state machine indexes what commits (`replicated::apply_batch`).
                let index_keys = Vec::new();
                pending.push(Pending { event, transaction_id: String::new(), seq, hash: sealed.hash });
                appends.push(Append { sealed, index_keys });
            }
            let take = queue.len().min(self.batch_max);
            for job in queue.drain(..take) {
                let keys = job.command.conflict_keys(&state, &job.transaction_id, self.conflict_seed);
                if held.is_some_and(|held| held.iter().any(|batch| batch.locks.conflicts(&keys)))
                    || !locks.try_lock(&keys)
                {
                    deferred.push(job);
                    continue;
                }
                let ctx = Context { now_ms, transaction_id: &job.transaction_id };
                let decision = decide(&state, &job.command, ctx);
                for event in decision.events {
                    seq += 1;
                    let sealed = seal(&prev_hash, seq, recorded_at_ms, &job.transaction_id, &event);
                    prev_hash = sealed.hash;
                    // Only a local commit stores these; a cluster's state machine indexes
                    // the events it applies (`replicated::apply_batch`).
                    let index_keys = match self.commit {
                        Commit::Local(_) => index::keys_for(&state, &self.token_ids, &event, seq),
                        Commit::Replicated(_) => Vec::new(),
                    };
                    pending.push(Pending { event, transaction_id: job.transaction_id.clone(), seq, hash: sealed.hash });
                    appends.push(Append { sealed, index_keys });
                }
                staged.push(Staged { reply: job.reply, outcome: decision.outcome });
            }
            tail = Tail { seq, hash: prev_hash, recorded_at_ms };
        }
        debug_assert_eq!(pending.len(), appends.len(), "every decided event is appended");
        debug_assert!(
            pending.iter().zip(pending.iter().skip(1)).all(|(a, b)| b.seq == a.seq + 1),
            "a batch's events have consecutive seqs"
        );
        self.status.deferred_commands.fetch_add(deferred.len() as u64, Ordering::Relaxed);
        for job in deferred.into_iter().rev() {
            queue.push_front(job);
        }
        if staged.is_empty() {
            return false;
        }
        if appends.is_empty() {
            // Every command was refused without an event: nothing to commit.
            self.finish(staged, 0, None);
            return true;
        }
        let started = Instant::now();
        let store = match &mut self.commit {
            Commit::Local(store) => store,
            Commit::Replicated(replicated) => {
                let envelopes = appends.into_iter().map(|append| append.sealed.bytes).collect();
                let proposal = replicated.commit.propose(envelopes, term);
                let events = pending.len();
                replicated.in_flight.push_back(InFlight { proposal, staged, locks, tail, term, events, started });
                return true;
            }
        };
        if let Err(error) = store.append(&appends) {
            // Fail closed: nothing of this batch is acknowledged, and no later write is
            // accepted until the process restarts and replays what is durable.
            tracing::error!(%error, "ledger commit failed; refusing writes until restart");
            self.status.failed.store(true, Ordering::Release);
            for item in staged {
                let _ = item.reply.send(Err(SubmitError));
            }
            for job in queue.drain(..) {
                let _ = job.reply.send(Err(SubmitError));
            }
            return true;
        }
        let elapsed = started.elapsed();
        self.status.commit_micros_total.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        // Apply after the commit, then answer: a caller that hears "done" can read its own write
        // at once.
        debug_assert!(
            {
                let state = self.state.read();
                pending.first().is_none_or(|first| first.seq == state.head.seq + 1)
                    && recorded_at_ms >= state.head.recorded_at_ms
            },
            "the batch continues the committed chain, at no earlier time"
        );
        super::committed::apply(
            &self.state,
            pending.iter().map(|item| {
                let at =
                    Recorded { seq: item.seq, recorded_at_ms, transaction_id: &item.transaction_id, hash: item.hash };
                (at, &item.event)
            }),
        );
        // Followers may read these events from the store now: committed and applied.
        self.head.send_replace(tail.seq);
        self.finish(staged, pending.len(), Some(elapsed));
        true
    }

    /// The chain after the newest batch in flight, if any.
    fn last_in_flight(&self) -> Option<Tail> {
        match &self.commit {
            Commit::Local(_) => None,
            Commit::Replicated(replicated) => replicated.in_flight.back().map(|batch| batch.tail),
        }
    }
}

/// Logs when the clock falls behind the ledger head by more than the allowed skew, and when it
/// has caught up again; readiness and `/metrics` compute the same gap themselves.
struct ClockWatch {
    skew_max_ms: i64,
    /// Whether the last batch found the clock behind by more than `skew_max_ms`.
    skewed: bool,
}

impl ClockWatch {
    fn observe(&mut self, now_ms: i64, head_ms: i64) {
        let behind_ms = head_ms.saturating_sub(now_ms);
        let skewed = behind_ms > self.skew_max_ms;
        if skewed == self.skewed {
            return;
        }
        self.skewed = skewed;
        if skewed {
            tracing::error!(
                behind_ms,
                skew_max_ms = self.skew_max_ms,
                "the clock is behind the ledger head; lifetimes and lockouts count from the clock, events keep the ledger's order; not ready until the clock catches up"
            );
        } else {
            tracing::warn!("the clock has caught up with the ledger head");
        }
    }
}

/// The conflict keys taken by the commands of one batch.
#[derive(Default)]
struct BatchLocks {
    // The keys are already hashes: a fast hasher is enough.
    reads: HashSet<u64, foldhash::fast::RandomState>,
    writes: HashSet<u64, foldhash::fast::RandomState>,
    /// Commands that took their keys.
    taken: usize,
    /// Set when an exclusive command took the batch: nothing else joins it.
    exclusive: bool,
}

impl BatchLocks {
    /// Takes `keys` unless they conflict with keys already taken: a write conflicts with any
    /// earlier read or write of the same key, a read with an earlier write. An exclusive
    /// command only starts a batch, and nothing joins a batch it started.
    fn try_lock(&mut self, keys: &ConflictKeys) -> bool {
        if self.conflicts(keys) {
            return false;
        }
        self.reads.extend(keys.reads.iter().copied());
        self.writes.extend(keys.writes.iter().copied());
        self.exclusive = keys.exclusive;
        self.taken += 1;
        true
    }
}

impl BatchLocks {
    /// Whether `keys` touch what these keys hold (write against any, read against write), or
    /// either side is exclusive: then the command must wait until these are released.
    fn conflicts(&self, keys: &ConflictKeys) -> bool {
        (keys.exclusive && self.taken > 0)
            || self.exclusive
            || keys.writes.iter().any(|k| self.writes.contains(k) || self.reads.contains(k))
            || keys.reads.iter().any(|k| self.writes.contains(k))
    }
}

/// What the writer reports about one batch it committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchStats {
    /// Commands decided in the batch.
    pub commands: usize,
    /// Events appended (0 when every command was refused).
    pub events: usize,
    /// Time of the durable commit, when there was one.
    pub commit: Option<std::time::Duration>,
}

/// A callback the writer runs after each batch, set once (the server's metrics). The ledger
/// knows nothing of what it does; it must be quick, as it runs on the writer thread.
#[derive(Default)]
pub struct BatchObserver(std::sync::OnceLock<Box<dyn Fn(BatchStats) + Send + Sync>>);

impl BatchObserver {
    /// Sets the callback; a second call is ignored.
    pub fn set(&self, observer: impl Fn(BatchStats) + Send + Sync + 'static) {
        let _ = self.0.set(Box::new(observer));
    }

    fn notify(&self, stats: BatchStats) {
        if let Some(observer) = self.0.get() {
            observer(stats);
        }
    }
}

impl std::fmt::Debug for BatchObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BatchObserver").field(&self.0.get().is_some()).finish()
    }
}
