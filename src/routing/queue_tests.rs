use super::*;

const OPEN: Turn = Turn {
    priority: Priority::Interactive,
    flow: 0,
};

fn turn(priority: Priority, flow: u64) -> Turn {
    Turn { priority, flow }
}

/// Serves the queue to its end, head after head, and names whom it served in order.
fn serve_all(mut tickets: Vec<(&'static str, Ticket)>) -> Vec<&'static str> {
    let mut order = Vec::new();
    while !tickets.is_empty() {
        let heads: Vec<usize> = (0..tickets.len())
            .filter(|&i| tickets[i].1.is_head())
            .collect();
        assert_eq!(heads.len(), 1, "one model, one head");
        let (name, t) = tickets.remove(heads[0]);
        t.served();
        order.push(name);
    }
    order
}

#[tokio::test]
async fn fifo_per_model_and_bounded() {
    let q = Arc::new(AdmissionQueue::default());
    let a = ModelName::new("a");
    let t1 = q.enter(Some(a.clone()), 3, OPEN).unwrap();
    let t2 = q.enter(Some(a.clone()), 3, OPEN).unwrap();
    let other = q.enter(Some(ModelName::new("b")), 3, OPEN).unwrap();
    assert!(matches!(q.enter(None, 3, OPEN), Err(QueueError::Full)));
    assert!(t1.is_head() && !t2.is_head() && other.is_head());
    assert_eq!(q.waiting_for(Some(&a)), 2);
    drop(t1);
    assert!(t2.is_head());
    assert_eq!(q.depth(), 2);
}

#[tokio::test(start_paused = true)]
async fn wait_times_out_and_leaves_the_queue() {
    let q = Arc::new(AdmissionQueue::default());
    let t = q.enter(None, 8, OPEN).unwrap();
    let r = t.wait(Duration::from_secs(5), |_| Err(NoRoute::Full)).await;
    assert!(matches!(r, Err(QueueError::Timeout(_))));
    drop(t);
    assert_eq!(q.depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_keys_the_order_is_arrival() {
    let q = Arc::new(AdmissionQueue::default());
    let m = Some(ModelName::new("m"));
    let names = ["1", "2", "3", "4", "5"];
    let mut tickets = Vec::new();
    for (i, n) in names.iter().enumerate() {
        tickets.push((*n, q.enter(m.clone(), 16, OPEN).unwrap()));
        // Serving in between must not reorder later arrivals.
        if i == 1 {
            tickets.remove(0).1.served();
        }
    }
    assert_eq!(serve_all(tickets), ["2", "3", "4", "5"]);
}

#[tokio::test(start_paused = true)]
async fn interactive_waiters_go_before_batch_ones() {
    let q = Arc::new(AdmissionQueue::default());
    let m = Some(ModelName::new("m"));
    let batch = turn(Priority::Batch, 1);
    let mut tickets = vec![
        ("b1", q.enter(m.clone(), 16, batch).unwrap()),
        ("b2", q.enter(m.clone(), 16, batch).unwrap()),
    ];
    tickets.push((
        "i1",
        q.enter(m.clone(), 16, turn(Priority::Interactive, 2))
            .unwrap(),
    ));
    assert!(
        tickets[2].1.is_head(),
        "the late interactive request is first"
    );
    assert_eq!(serve_all(tickets), ["i1", "b1", "b2"]);
}

#[tokio::test(start_paused = true)]
async fn batch_waiters_age_into_interactive() {
    let q = Arc::new(AdmissionQueue::default());
    let m = Some(ModelName::new("m"));
    let old = q.enter(m.clone(), 16, turn(Priority::Batch, 1)).unwrap();
    tokio::time::advance(BATCH_AGING - Duration::from_secs(1)).await;
    let fresh = q
        .enter(m.clone(), 16, turn(Priority::Interactive, 2))
        .unwrap();
    assert!(fresh.is_head() && !old.is_head());
    tokio::time::advance(Duration::from_secs(1)).await;
    // Now as urgent as the interactive one, and its turn came first.
    assert!(old.is_head() && !fresh.is_head());
}

#[tokio::test(start_paused = true)]
async fn keys_take_turns_within_a_class() {
    let q = Arc::new(AdmissionQueue::default());
    let m = Some(ModelName::new("m"));
    let (a, b, c) = (
        turn(Priority::Batch, 1),
        turn(Priority::Batch, 2),
        turn(Priority::Batch, 3),
    );
    // Key a bursts four requests, then b sends two and c one.
    let mut tickets = Vec::new();
    for n in ["a1", "a2", "a3", "a4"] {
        tickets.push((n, q.enter(m.clone(), 16, a).unwrap()));
    }
    for n in ["b1", "b2"] {
        tickets.push((n, q.enter(m.clone(), 16, b).unwrap()));
    }
    tickets.push(("c1", q.enter(m.clone(), 16, c).unwrap()));
    assert_eq!(
        serve_all(tickets),
        ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_arriving_late_waits_one_turn_not_the_whole_burst() {
    let q = Arc::new(AdmissionQueue::default());
    let m = Some(ModelName::new("m"));
    let a = turn(Priority::Interactive, 1);
    let mut burst: Vec<(&'static str, Ticket)> = ["a1", "a2", "a3", "a4", "a5"]
        .into_iter()
        .map(|n| (n, q.enter(m.clone(), 16, a).unwrap()))
        .collect();
    // Two of a's requests are served before b shows up.
    for _ in 0..2 {
        let (_, t) = burst.remove(0);
        t.served();
    }
    burst.push((
        "b1",
        q.enter(m.clone(), 16, turn(Priority::Interactive, 2))
            .unwrap(),
    ));
    assert_eq!(serve_all(burst), ["a3", "b1", "a4", "a5"]);
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_wakes_the_first_in_service_order() {
    let q = Arc::new(AdmissionQueue::default());
    let m = Some(ModelName::new("m"));
    let batch = q.enter(m.clone(), 16, turn(Priority::Batch, 1)).unwrap();
    let inter = q
        .enter(m.clone(), 16, turn(Priority::Interactive, 2))
        .unwrap();
    q.wake_first(|_| true);
    // The interactive waiter's notification is stored; the batch one's is not.
    let woke = |t: &Ticket| {
        let n = t.wake.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(1), n.notified())
                .await
                .is_ok()
        }
    };
    assert!(woke(&inter).await);
    assert!(!woke(&batch).await);
}
