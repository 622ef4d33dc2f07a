//! `busbar:plugin/config`: the `[config]` table of the plugin's manifest.

use super::State;
use super::bindings::busbar::plugin::config::Host;

impl Host for State {
    fn get(&mut self, key: String) -> Option<String> {
        self.host.manifest.config.get(&key).cloned()
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.host
            .manifest
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
