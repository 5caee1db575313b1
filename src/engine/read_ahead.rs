//! Reading ahead: a collection is scanned on its own thread while the cycle works on the
//! batch before, so waiting for the system overlaps with planning and writing.

use crate::Error;
use crate::connectors::{Connector, ConnectorError, ReadSpec};
use crate::model::Record;
use std::sync::mpsc;

/// Batches read but not yet consumed: bounds memory at a few batches.
const BATCHES_AHEAD: usize = 2;

/// Streams `connector`'s scan of `spec` into `consume`, reading ahead on a scoped
/// thread. Returns the number of records read. A failure of `consume` stops the scan and
/// is the error returned; a failed scan is returned as the connector's error.
pub(crate) fn scan_ahead(
    connector: &mut dyn Connector,
    spec: &ReadSpec,
    batch_size: usize,
    consume: &mut dyn FnMut(Vec<Record>) -> Result<(), Error>,
) -> Result<u64, Error> {
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::sync_channel::<Vec<Record>>(BATCHES_AHEAD);
        let reader = scope.spawn(move || {
            connector.scan(spec, batch_size, &mut |records| {
                // The receiver is gone only when `consume` failed; its error is the one
                // reported, so this one only needs to stop the scan.
                let sent = sender.send(records).map_err(|_| Error::Stopped);
                super::batch_done();
                sent
            })
        });
        let consumed = receiver.iter().try_for_each(|records| {
            let consumed = consume(records);
            super::batch_done();
            consumed
        });
        // Unblocks a reader waiting to hand over a batch after `consume` failed.
        drop(receiver);
        let scanned = match reader.join() {
            Ok(scanned) => scanned,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        consumed?;
        scanned.map_err(|e| match e {
            ConnectorError::Consumer(inner) => *inner,
            other => Error::Connector(other),
        })
    })
}
