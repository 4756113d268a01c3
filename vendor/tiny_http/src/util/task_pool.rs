use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// llm-proxy patch: the work the pool runs (a client connection), and what
/// to do with it when it cannot run (answer and close without a thread).
pub trait Task: Send {
    fn run(self: Box<Self>) -> Ended;
    fn refuse(self: Box<Self>, status: u16, message: &str);
}

/// llm-proxy patch 15: how a task's run ended.
pub enum Ended {
    /// The connection is closed: it no longer counts as open.
    Closed,
    /// The connection is parked (`Request::park_connection`): still open
    /// and counted, it comes back through a [`Resumer`].
    Parked,
}

/// Manages a collection of threads.
///
/// A new thread is created every time all the existing threads are full.
/// Any idle thread will automatically die after a few seconds.
///
/// llm-proxy patch: at most `max_tasks` tasks are admitted at once (the
/// rest are refused on the caller's thread, without a thread of their own),
/// a failed thread spawn refuses that one task (it used to panic while
/// holding the queue's lock, poisoning it for every other thread and ending
/// the accept thread), a panicking task does not take its thread or the
/// count with it, threads get `stack_size`, and at most `MAX_IDLE` threads
/// wait idle.
pub struct TaskPool {
    sharing: Arc<Sharing>,
    max_tasks: usize,
    stack_size: usize,
}

struct Sharing {
    // list of the tasks to be done by worker threads
    todo: Mutex<VecDeque<Box<dyn Task>>>,

    // condvar that will be notified whenever a task is added to `todo`
    condvar: Condvar,

    // number of total worker threads running
    active_tasks: AtomicUsize,

    // number of idle worker threads
    waiting_tasks: AtomicUsize,

    /// llm-proxy patch: tasks admitted and not finished (queued or running).
    admitted: AtomicUsize,
}

impl Sharing {
    fn todo(&self) -> MutexGuard<'_, VecDeque<Box<dyn Task>>> {
        self.todo.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Minimum number of active threads.
static MIN_THREADS: usize = 4;

/// llm-proxy patch: most idle threads kept. A thread that finishes a task
/// when this many already wait exits at once. Waiting threads are woken in
/// no particular order, so under a steady trickle of connections every idle
/// thread was woken before its 5 s ran out and none ever exited: after a
/// burst of 1,000 connections, 1,000 idle threads (and their stacks) stayed,
/// and under RLIMIT_NPROC they left no room for request workers.
static MAX_IDLE: usize = 16;

struct Registration<'a> {
    nb: &'a AtomicUsize,
}

impl<'a> Registration<'a> {
    fn new(nb: &'a AtomicUsize) -> Registration<'a> {
        nb.fetch_add(1, Ordering::Release);
        Registration { nb }
    }
}

impl<'a> Drop for Registration<'a> {
    fn drop(&mut self) {
        self.nb.fetch_sub(1, Ordering::Release);
    }
}

impl TaskPool {
    pub fn new(max_tasks: usize, stack_size: usize) -> TaskPool {
        let pool = TaskPool {
            sharing: Arc::new(Sharing {
                todo: Mutex::new(VecDeque::new()),
                condvar: Condvar::new(),
                active_tasks: AtomicUsize::new(0),
                waiting_tasks: AtomicUsize::new(0),
                admitted: AtomicUsize::new(0),
            }),
            max_tasks: max_tasks.max(1),
            stack_size,
        };

        for _ in 0..MIN_THREADS {
            if let Err(e) = pool.add_thread() {
                log::error!("cannot start a connection thread: {}", e);
            }
        }

        pool
    }

    /// Tasks admitted and not yet finished.
    pub fn admitted(&self) -> usize {
        self.sharing.admitted.load(Ordering::Acquire)
    }

    /// Runs a task on a thread, spawning one if none is available; refuses
    /// it (503) when `max_tasks` are running or no thread can be started.
    pub fn spawn(&self, code: Box<dyn Task>) {
        // Only the accept thread admits, so this check cannot race another.
        if self.admitted() >= self.max_tasks {
            log::warn!(
                "refusing a connection: {} connections open (max_connections)",
                self.max_tasks
            );
            code.refuse(503, "The server is at its connection limit; retry shortly");
            return;
        }
        self.sharing.admitted.fetch_add(1, Ordering::AcqRel);
        if let Err((code, e)) = enqueue(&self.sharing, self.stack_size, code) {
            log::error!("cannot start a thread for a new connection, refusing it: {}", e);
            code.refuse(503, "The server cannot take more connections now; retry shortly");
        }
    }

    /// llm-proxy patch 15: a handle that queues a parked connection's task
    /// again, from any thread.
    pub fn resumer(&self) -> Resumer {
        Resumer {
            sharing: self.sharing.clone(),
            stack_size: self.stack_size,
        }
    }

    fn add_thread(&self) -> io::Result<()> {
        add_thread(&self.sharing, self.stack_size)
    }
}

/// llm-proxy patch 15: see [`TaskPool::resumer`].
#[derive(Clone)]
pub struct Resumer {
    sharing: Arc<Sharing>,
    stack_size: usize,
}

impl Resumer {
    /// Run a parked connection's task again. It is already admitted (it
    /// stayed counted while parked); if no thread can be started for it,
    /// it is dropped, which closes the connection.
    pub fn resume(&self, code: Box<dyn Task>) {
        if let Err((code, e)) = enqueue(&self.sharing, self.stack_size, code) {
            log::error!("cannot start a thread for a kept connection, closing it: {}", e);
            drop(code);
        }
    }
}

/// Queue an admitted task for a pool thread, starting one if none is free.
/// If none can be started, the task is taken back, no longer admitted, and
/// returned with the error.
fn enqueue(
    sharing: &Arc<Sharing>,
    stack_size: usize,
    code: Box<dyn Task>,
) -> Result<(), (Box<dyn Task>, io::Error)> {
    let mut queue = sharing.todo();
    queue.push_back(code);

    // llm-proxy patch: a thread that was notified but has not woken yet
    // still counts as waiting, so `waiting_tasks == 0` let two quick
    // connections share one waiting thread; the second then sat in the
    // queue until some other connection closed, which with keep-alive
    // clients could be never (measured: 64 clients served by ~8 threads;
    // upstream requests to the mock stalled 60 s). Start a thread unless
    // there are more waiting threads than queued tasks.
    if sharing.waiting_tasks.load(Ordering::Acquire) < queue.len() {
        // The new thread takes a task from the queue (this one, or an
        // earlier one if a waiting thread takes this one first).
        if let Err(e) = add_thread(sharing, stack_size) {
            // Nothing can have taken it: the lock is held.
            let code = queue.pop_back().expect("the task just queued");
            drop(queue);
            sharing.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err((code, e));
        }
    } else {
        sharing.condvar.notify_one();
    }
    Ok(())
}

/// Start a pool thread; it takes tasks from the queue until it retires.
fn add_thread(sharing: &Arc<Sharing>, stack_size: usize) -> io::Result<()> {
    {
        let sharing = sharing.clone();
        let mut builder = thread::Builder::new().name("connection".into());
        if stack_size > 0 {
            builder = builder.stack_size(stack_size);
        }
        builder.spawn(move || {
            let sharing = sharing;
            let _active_guard = Registration::new(&sharing.active_tasks);

            loop {
                let task: Box<dyn Task> = {
                    let mut todo = sharing.todo();

                    let task;
                    loop {
                        if let Some(poped_task) = todo.pop_front() {
                            task = poped_task;
                            break;
                        }
                        if sharing.waiting_tasks.load(Ordering::Acquire) >= MAX_IDLE
                            && sharing.active_tasks.load(Ordering::Acquire) > MIN_THREADS
                        {
                            return;
                        }
                        let _waiting_guard = Registration::new(&sharing.waiting_tasks);

                        let received =
                            if sharing.active_tasks.load(Ordering::Acquire) <= MIN_THREADS {
                                todo = sharing.condvar.wait(todo).unwrap_or_else(|e| e.into_inner());
                                true
                            } else {
                                let (new_lock, waitres) = sharing
                                    .condvar
                                    .wait_timeout(todo, Duration::from_millis(5000))
                                    .unwrap_or_else(|e| e.into_inner());
                                todo = new_lock;
                                !waitres.timed_out()
                            };

                        if !received && todo.is_empty() {
                            return;
                        }
                    }

                    task
                };

                // A panic in one connection ends that connection only.
                let ended = catch_unwind(AssertUnwindSafe(|| task.run()));
                if !matches!(ended, Ok(Ended::Parked)) {
                    sharing.admitted.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
        Ok(())
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.sharing
            .active_tasks
            .store(999_999_999, Ordering::Release);
        self.sharing.condvar.notify_all();
    }
}
