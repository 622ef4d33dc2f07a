//! `busbar:plugin/log`: plugin log lines in busbar's own log, under the plugin's name.

use super::State;
use super::bindings::busbar::plugin::log::{Host, Level};

/// Log calls per call beyond this are dropped (one warning says how many).
const MAX_LINES_PER_CALL: u32 = 1000;
/// A longer message is cut here (on a character boundary).
const MAX_MESSAGE: usize = 8 * 1024;

impl Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LINES_PER_CALL {
            if self.log_lines == MAX_LINES_PER_CALL + 1 {
                tracing::warn!(plugin = %self.host.name, "plugin logged more than {MAX_LINES_PER_CALL} lines in one call; dropping the rest of this call's lines");
            }
            return;
        }
        let mut message = message.as_str();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message = &message[..cut];
        }
        let plugin = &*self.host.name;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
