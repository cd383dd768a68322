//! The group's partitions read from queues of their own, a batch of
//! messages per call (`rd_kafka_consume_batch_queue`), instead of one
//! message per poll of the consumer's queue. A poll costs a lock, a clock
//! reading, an event and its allocation per message; a bare consumer's
//! per-message poll loop spent ~0.4 CPU seconds per million messages in
//! it, as much as Vigil's decoding.
//!
//! A partition's queue is split off once its assignment is known. What the
//! consumer's queue already held of it stays there and is read first: the
//! reader thread drains the consumer's queue (which keeps the group's
//! events) after every split and before it reads any partition queue, so a
//! partition's messages are handed over in offset order. librdkafka keeps a
//! split partition's messages in its own queue across later assignments
//! (`rd_kafka_queue_forward(q, NULL)` marks the queue as the application's),
//! and drops what an older assignment fetched (its version barrier).

use std::ffi::CString;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::schema::Topic;

/// One fetched message, borrowed from librdkafka for the call that reads it.
pub(super) struct Fetched<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: crate::decode::Headers,
}

/// One partition's queue, split off the consumer's.
pub(super) struct PartitionQueue {
    queue: *mut rd::rd_kafka_queue_t,
    pub(super) topic: Topic,
    pub(super) partition: i32,
    /// Reused for every batch.
    slots: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: a librdkafka queue handle may be used from any thread; this one is
// used only by the reader thread that owns it, and destroyed there before
// the consumer it belongs to.
unsafe impl Send for PartitionQueue {}

impl PartitionQueue {
    /// Splits `name`'s `partition` off `consumer`'s queue; `None` if
    /// librdkafka does not know the partition.
    pub(super) fn split<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        name: &str,
        topic: Topic,
        partition: i32,
    ) -> Option<PartitionQueue> {
        let name = CString::new(name).ok()?;
        // SAFETY: the client pointer is live while `consumer` is; the name is
        // a valid C string for the call.
        let queue =
            unsafe { rd::rd_kafka_queue_get_partition(consumer.client().native_ptr(), name.as_ptr(), partition) };
        if queue.is_null() {
            return None;
        }
        // SAFETY: `queue` is the live handle just returned.
        unsafe { rd::rd_kafka_queue_forward(queue, std::ptr::null_mut()) };
        Some(PartitionQueue { queue, topic, partition, slots: Vec::new() })
    }

    /// Takes up to `max` messages waiting in the queue (never waits) and
    /// gives each to `each`; errors on the partition go to `error`. The
    /// number of messages taken.
    pub(super) fn drain(
        &mut self,
        max: usize,
        mut each: impl FnMut(Fetched<'_>),
        mut error: impl FnMut(KafkaError),
    ) -> usize {
        if max == 0 {
            return 0;
        }
        self.slots.clear();
        self.slots.reserve(max);
        // SAFETY: `slots` has room for `max` pointers; librdkafka writes at
        // most that many and returns how many it wrote.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.queue, 0, self.slots.as_mut_ptr(), max) };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        // SAFETY: the first `n` slots were written just now.
        unsafe { self.slots.set_len(n) };
        let mut taken = 0;
        for &m in &self.slots {
            // SAFETY: each message is live until destroyed below, and only
            // read meanwhile.
            unsafe {
                let message = &*m;
                if message.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    each(Fetched {
                        offset: message.offset,
                        key: bytes_of(message.key, message.key_len),
                        payload: bytes_of(message.payload, message.len),
                        headers: headers_of(m),
                    });
                    taken += 1;
                } else {
                    error(KafkaError::MessageConsumption(RDKafkaErrorCode::from(message.err)));
                }
                rd::rd_kafka_message_destroy(m);
            }
        }
        self.slots.clear();
        taken
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is live and not used after this.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}

/// # Safety
/// `ptr` is null or points at `len` readable bytes that outlive `'a`.
unsafe fn bytes_of<'a>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: as the caller promises.
        Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }
}

/// The message's headers, copied (none, unallocated, for most records).
///
/// # Safety
/// `m` is a live message.
unsafe fn headers_of(m: *mut rd::rd_kafka_message_t) -> crate::decode::Headers {
    let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m` is live; librdkafka owns the headers it points us at.
    if unsafe { rd::rd_kafka_message_headers(m, &mut headers) } != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return crate::decode::Headers::default();
    }
    let mut out = crate::decode::Headers::default();
    for i in 0.. {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        // SAFETY: `headers` is live with `m`; the out-pointers are valid.
        let found = unsafe { rd::rd_kafka_header_get_all(headers, i, &mut name, &mut value, &mut size) };
        if found != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            break;
        }
        // SAFETY: librdkafka's header names are NUL-terminated; the value
        // is `size` bytes or null.
        let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned();
        out.push((name, unsafe { bytes_of(value, size) }.map(<[u8]>::to_vec)));
    }
    out
}

/// A handle on the consumer's own queue, to ask how much it still holds.
pub(super) struct ConsumerQueue(*mut rd::rd_kafka_queue_t);

// SAFETY: as for `PartitionQueue`.
unsafe impl Send for ConsumerQueue {}

impl ConsumerQueue {
    pub(super) fn of<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<ConsumerQueue> {
        // SAFETY: the client pointer is live while `consumer` is.
        let queue = unsafe { rd::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        (!queue.is_null()).then_some(ConsumerQueue(queue))
    }

    /// Messages and events waiting in it.
    pub(super) fn len(&self) -> usize {
        // SAFETY: the handle is live.
        unsafe { rd::rd_kafka_queue_length(self.0) }
    }
}

impl Drop for ConsumerQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is live and not used after this.
        unsafe { rd::rd_kafka_queue_destroy(self.0) };
    }
}
