//! A link's two systems as the engine uses them: each connector opened, adapted to the
//! engine's contract (`adapt`), the left seen in the right's meaning (`translate`), and
//! the columns the link names checked against both (`layout`).

use super::layout::Layout;
use super::{adapt, translate};
use crate::Error;
use crate::config::{Config, LinkSpec};
use crate::connectors::{self, Connector};
use crate::model::Side;

/// The connectors and column layout of one link, checked against the systems.
pub(crate) struct LinkIo {
    pub left: Box<dyn Connector>,
    pub right: Box<dyn Connector>,
    pub layout: Layout,
}

impl LinkIo {
    /// Opens both systems and checks that every column the link names exists.
    pub fn open(config: &Config, link: &LinkSpec) -> Result<LinkIo, Error> {
        let open = |side: Side| -> Result<Box<dyn Connector>, Error> {
            let ep = link.endpoint(side);
            let spec = &config.systems[&ep.system];
            Ok(connectors::open(&ep.system, spec)?)
        };
        // The engine sees the left in the right's meaning (see `translate`).
        let mut left = translate::Translated::wrap(adapt::wrap(open(Side::Left)?), link);
        let mut right = adapt::wrap(open(Side::Right)?);
        let layout = Layout::new(config, link, left.as_mut(), right.as_mut())?;
        Ok(LinkIo {
            left,
            right,
            layout,
        })
    }

    pub fn connector(&mut self, side: Side) -> &mut dyn Connector {
        match side {
            Side::Left => self.left.as_mut(),
            Side::Right => self.right.as_mut(),
        }
    }
}
