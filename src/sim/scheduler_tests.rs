//! Scheduler tests on tokio's paused clock: loads take virtual seconds, and a waiting
//! task is proven to be waiting by letting virtual time run out on it.

use super::*;

fn name(raw: &str) -> ModelName {
    ModelName::parse(raw).expect("valid model name")
}

fn tokens(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn scheduler(parallel: usize, max_loaded: usize) -> (Arc<Scheduler>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let config = SchedulerConfig {
        parallel,
        max_loaded,
        load_time: Duration::from_secs(2),
    };
    (Scheduler::new(config, Arc::clone(&stats)), stats)
}

fn resident_names(scheduler: &Scheduler) -> Vec<String> {
    scheduler
        .resident()
        .into_iter()
        .map(|model| model.name.to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn free_slot_with_longest_prefix_is_chosen() {
    let (scheduler, stats) = scheduler(2, 1);
    let model = name("llama3");
    assert!(scheduler.preload(model.clone()));

    let first = scheduler.acquire(&model, &tokens("a b c"), None).await;
    let second = scheduler.acquire(&model, &tokens("x y"), None).await;
    let (first_slot, second_slot) = (first.slot, second.slot);
    assert_ne!(first_slot, second_slot);
    drop(first);
    drop(second);

    let continues_x = scheduler.acquire(&model, &tokens("x y z"), None).await;
    assert_eq!(continues_x.slot, second_slot);
    assert_eq!(continues_x.cached_prefix(), 2);

    let continues_a = scheduler.acquire(&model, &tokens("a b q"), None).await;
    assert_eq!(continues_a.slot, first_slot);
    assert_eq!(continues_a.cached_prefix(), 2);
    drop(continues_x);
    drop(continues_a);

    // Identical prompt: everything but the last token is reused.
    let repeat = scheduler.acquire(&model, &tokens("x y z"), None).await;
    assert_eq!(repeat.cached_prefix(), 2);
    assert_eq!(repeat.load_duration(), Duration::ZERO);
    assert_eq!(stats.snapshot().loads, 0);
}

#[tokio::test(start_paused = true)]
async fn generated_tokens_join_the_slot_cache() {
    let (scheduler, _) = scheduler(1, 1);
    let model = name("llama3");
    scheduler.preload(model.clone());
    let mut lease = scheduler.acquire(&model, &tokens("user hi"), None).await;
    lease.remember("assistant");
    lease.remember("hello");
    drop(lease);
    let next_turn = tokens("user hi assistant hello user more");
    let lease = scheduler.acquire(&model, &next_turn, None).await;
    assert_eq!(lease.cached_prefix(), 4);
}

#[tokio::test(start_paused = true)]
async fn eviction_takes_least_recently_used_idle_model() {
    let (scheduler, stats) = scheduler(1, 2);
    for model in ["m1", "m2", "m1"] {
        drop(scheduler.acquire(&name(model), &tokens("p"), None).await);
    }
    assert_eq!(resident_names(&scheduler), ["m1:latest", "m2:latest"]);

    let lease = scheduler.acquire(&name("m3"), &tokens("p"), None).await;
    assert_eq!(lease.load_duration(), Duration::from_secs(2));
    assert_eq!(resident_names(&scheduler), ["m1:latest", "m3:latest"]);
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.loads, snapshot.evictions), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn busy_model_is_not_evicted_until_it_goes_idle() {
    let (scheduler, stats) = scheduler(1, 1);
    let busy = scheduler.acquire(&name("m1"), &tokens("p"), None).await;

    let waiting = {
        let scheduler = Arc::clone(&scheduler);
        tokio::spawn(async move { scheduler.acquire(&name("m2"), &tokens("p"), None).await })
    };
    let mut waiting = waiting;
    let gave_up = tokio::time::timeout(Duration::from_secs(60), &mut waiting).await;
    assert!(gave_up.is_err(), "m2 must wait while m1 is busy");
    assert_eq!(resident_names(&scheduler), ["m1:latest"]);

    drop(busy);
    let lease = waiting.await.expect("load task");
    // 60 s waiting for m1 to go idle, then the 2 s load.
    assert_eq!(lease.load_duration(), Duration::from_secs(62));
    assert_eq!(resident_names(&scheduler), ["m2:latest"]);
    assert_eq!(stats.snapshot().evictions, 1);
}

#[tokio::test(start_paused = true)]
async fn loads_happen_one_at_a_time() {
    let (scheduler, stats) = scheduler(1, 3);
    let (m1, m2, prompt) = (name("m1"), name("m2"), tokens("p"));
    let (a, b) = tokio::join!(
        scheduler.acquire(&m1, &prompt, None),
        scheduler.acquire(&m2, &prompt, None),
    );
    let mut durations = [a.load_duration(), b.load_duration()];
    durations.sort();
    assert_eq!(durations, [Duration::from_secs(2), Duration::from_secs(4)]);
    assert_eq!(stats.snapshot().loads, 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_share_one_load() {
    let (scheduler, stats) = scheduler(2, 3);
    let model = name("m1");
    let (p, q) = (tokens("p"), tokens("q"));
    let (a, b) = tokio::join!(
        scheduler.acquire(&model, &p, None),
        scheduler.acquire(&model, &q, None),
    );
    assert_eq!(a.load_duration(), Duration::from_secs(2));
    assert_eq!(b.load_duration(), Duration::from_secs(2));
    assert_eq!(stats.snapshot().loads, 1);
}

#[tokio::test(start_paused = true)]
async fn slot_waiters_queue_without_bound() {
    let (scheduler, _) = scheduler(1, 1);
    let model = name("m1");
    scheduler.preload(model.clone());
    let holder = scheduler.acquire(&model, &tokens("p"), None).await;
    let mut waiter = {
        let scheduler = Arc::clone(&scheduler);
        let model = model.clone();
        tokio::spawn(async move { scheduler.acquire(&model, &tokens("q"), None).await })
    };
    let still_waiting = tokio::time::timeout(Duration::from_secs(600), &mut waiter).await;
    assert!(still_waiting.is_err());
    drop(holder);
    let lease = waiter.await.expect("waiter task");
    assert_eq!(lease.load_duration(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_expires_idle_models() {
    let (scheduler, stats) = scheduler(1, 3);
    let keep_for_a_minute = Some(KeepAlive::For(Duration::from_secs(60)));
    drop(
        scheduler
            .acquire(&name("m1"), &tokens("p"), keep_for_a_minute)
            .await,
    );
    drop(
        scheduler
            .acquire(
                &name("m2"),
                &tokens("p"),
                Some(KeepAlive::For(Duration::ZERO)),
            )
            .await,
    );
    assert_eq!(resident_names(&scheduler), ["m1:latest"]);

    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(resident_names(&scheduler).is_empty());
    assert_eq!(stats.snapshot().unloads, 2);
}
