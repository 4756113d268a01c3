use std::io::Result as IoResult;
use std::io::{Read, Write};

use std::sync::{Arc, Condvar, Mutex};

// llm-proxy patch 14: a one-value hand-off instead of std's mpsc channel.
// Each request made two channels; a channel allocates ~500 bytes, and the
// first value sent on it a ~2.7 KB block (31 slots, zeroed), which stayed
// alive while the connection's thread waited for a next request (the read
// ahead ran with the receiver still in place): ~3.7 KB per connection,
// 3.7 MB at 1,000 streams. A slot is one allocation of ~100 bytes.
use self::handoff::{channel, Receiver, Sender};

mod handoff {
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};

    enum State<T> {
        Empty,
        Full(T),
        /// The sender went away without sending.
        Closed,
        /// The value was taken.
        Taken,
    }

    struct Slot<T> {
        state: Mutex<State<T>>,
        ready: Condvar,
    }

    impl<T> Slot<T> {
        fn lock(&self) -> MutexGuard<'_, State<T>> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// Sends at most one value.
    pub struct Sender<T>(Arc<Slot<T>>);

    /// Receives the one value.
    pub struct Receiver<T>(Arc<Slot<T>>);

    /// The receiver's side found the sender gone without a value.
    #[derive(Debug)]
    pub struct Disconnected;

    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Empty),
            ready: Condvar::new(),
        });
        (Sender(slot.clone()), Receiver(slot))
    }

    impl<T> Sender<T> {
        /// Hand `value` over (it is dropped if it was already sent).
        pub fn send(&self, value: T) -> Result<(), Disconnected> {
            let mut st = self.0.lock();
            if matches!(*st, State::Empty) {
                *st = State::Full(value);
                self.0.ready.notify_one();
            }
            Ok(())
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            let mut st = self.0.lock();
            if matches!(*st, State::Empty) {
                *st = State::Closed;
                self.0.ready.notify_one();
            }
        }
    }

    impl<T> Receiver<T> {
        /// Wait for the value.
        pub fn recv(&self) -> Result<T, Disconnected> {
            let mut st = self.0.lock();
            loop {
                match std::mem::replace(&mut *st, State::Taken) {
                    State::Full(v) => return Ok(v),
                    State::Empty => {
                        *st = State::Empty;
                        st = self.0.ready.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                    other => {
                        *st = other;
                        return Err(Disconnected);
                    }
                }
            }
        }
    }
}

use std::mem;

pub struct SequentialReaderBuilder<R>
where
    R: Read + Send,
{
    inner: SequentialReaderBuilderInner<R>,
}

enum SequentialReaderBuilderInner<R>
where
    R: Read + Send,
{
    First(R),
    NotFirst(Receiver<R>),
}

pub struct SequentialReader<R>
where
    R: Read + Send,
{
    inner: SequentialReaderInner<R>,
    next: Sender<R>,
}

enum SequentialReaderInner<R>
where
    R: Read + Send,
{
    MyTurn(R),
    Waiting(Receiver<R>),
    Empty,
}

pub struct SequentialWriterBuilder<W>
where
    W: Write + Send,
{
    writer: Arc<Mutex<W>>,
    next_trigger: Option<Receiver<()>>,
}

pub struct SequentialWriter<W>
where
    W: Write + Send,
{
    trigger: Option<Receiver<()>>,
    writer: Arc<Mutex<W>>,
    on_finish: Sender<()>,
}

impl<R: Read + Send> SequentialReaderBuilder<R> {
    pub fn new(reader: R) -> SequentialReaderBuilder<R> {
        SequentialReaderBuilder {
            inner: SequentialReaderBuilderInner::First(reader),
        }
    }
}

impl<W: Write + Send> SequentialWriterBuilder<W> {
    pub fn new(writer: W) -> SequentialWriterBuilder<W> {
        SequentialWriterBuilder {
            writer: Arc::new(Mutex::new(writer)),
            next_trigger: None,
        }
    }
}

impl<R: Read + Send> Iterator for SequentialReaderBuilder<R> {
    type Item = SequentialReader<R>;

    fn next(&mut self) -> Option<SequentialReader<R>> {
        let (tx, rx) = channel();

        let inner = mem::replace(&mut self.inner, SequentialReaderBuilderInner::NotFirst(rx));

        match inner {
            SequentialReaderBuilderInner::First(reader) => Some(SequentialReader {
                inner: SequentialReaderInner::MyTurn(reader),
                next: tx,
            }),

            SequentialReaderBuilderInner::NotFirst(previous) => Some(SequentialReader {
                inner: SequentialReaderInner::Waiting(previous),
                next: tx,
            }),
        }
    }
}

impl<W: Write + Send> Iterator for SequentialWriterBuilder<W> {
    type Item = SequentialWriter<W>;
    fn next(&mut self) -> Option<SequentialWriter<W>> {
        let (tx, rx) = channel();
        let mut next_next_trigger = Some(rx);
        ::std::mem::swap(&mut next_next_trigger, &mut self.next_trigger);

        Some(SequentialWriter {
            trigger: next_next_trigger,
            writer: self.writer.clone(),
            on_finish: tx,
        })
    }
}

impl<R: Read + Send> Read for SequentialReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        self.turn().read(buf)
    }
}

impl<R: Read + Send> SequentialReader<R> {
    /// The reader, once it is this one's turn (waiting for it if need be).
    /// llm-proxy patch 14: the turn is taken (and the hand-off freed) before
    /// the reader is used: a read may wait a long time for a next request.
    fn turn(&mut self) -> &mut R {
        if let SequentialReaderInner::Waiting(ref mut recv) = self.inner {
            let reader = recv.recv().unwrap();
            self.inner = SequentialReaderInner::MyTurn(reader);
        }
        match self.inner {
            SequentialReaderInner::MyTurn(ref mut reader) => reader,
            _ => unreachable!(),
        }
    }
}

impl<R: Read + Send> SequentialReader<std::io::BufReader<R>> {
    /// llm-proxy patch 15: whether the buffer holds no byte of input (once
    /// it is this reader's turn, which this waits for, as a read would).
    pub fn nothing_buffered(&mut self) -> bool {
        self.turn().buffer().is_empty()
    }
}

impl<W: Write + Send> Write for SequentialWriter<W> {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        if let Some(v) = self.trigger.as_mut() {
            v.recv().unwrap()
        }
        self.trigger = None;

        self.writer.lock().unwrap().write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        if let Some(v) = self.trigger.as_mut() {
            v.recv().unwrap()
        }
        self.trigger = None;

        self.writer.lock().unwrap().flush()
    }
}

impl<R> Drop for SequentialReader<R>
where
    R: Read + Send,
{
    fn drop(&mut self) {
        let inner = mem::replace(&mut self.inner, SequentialReaderInner::Empty);

        match inner {
            SequentialReaderInner::MyTurn(reader) => {
                self.next.send(reader).ok();
            }
            SequentialReaderInner::Waiting(recv) => {
                let reader = recv.recv().unwrap();
                self.next.send(reader).ok();
            }
            SequentialReaderInner::Empty => (),
        }
    }
}

impl<W> Drop for SequentialWriter<W>
where
    W: Write + Send,
{
    fn drop(&mut self) {
        self.on_finish.send(()).ok();
    }
}
