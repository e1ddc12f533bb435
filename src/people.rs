//! The people-and-deadlines activities a command-line run hosts: directory lookups, and
//! notifications delivered in-app (a run has no mail server; its in-app inbox and delivery log
//! stay in the run's store).

use std::sync::Arc;

use baton_activities::notify::{NotifyConfig, register_notify};
use baton_engine::ActivityRegistry;
use baton_workflows::run::StoreContext;

/// Registers `baton.directory.*` and `baton.notify` on the run's store, with the definition's
/// own templates.
pub fn register_store_activities(context: StoreContext<'_>, registry: &mut ActivityRegistry) -> Result<(), String> {
    baton_activities::register_directory(registry, Arc::clone(&context.store));
    let mut notify = NotifyConfig::new(context.store, context.clock);
    notify.calendars = context.program.calendars.clone();
    notify
        .add_definition_templates(context.definition, &context.program.templates)
        .map_err(|e| format!("use.templates: {e}"))?;
    register_notify(registry, Arc::new(notify));
    Ok(())
}
