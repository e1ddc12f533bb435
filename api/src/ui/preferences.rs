//! The person's notification preferences: which channels, quiet hours, a daily digest, set
//! through `setPreferences` as the person.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use baton_engine::directory::Preferences;
use serde::Deserialize;

use super::Session;
use super::pages::{as_api, page, posted_field, problem_page, stale_form};
use crate::app::App;
use crate::routes::Body;
use crate::routes::others::{self as api_others, PreferencesBody};

/// One channel's checkbox.
struct ChannelChoice {
    name: &'static str,
    label: &'static str,
    on: bool,
}

#[derive(Template)]
#[template(path = "ui/preferences.html")]
struct PreferencesPage {
    who: Option<String>,
    csrf: String,
    /// False for an account the directory does not hold: it has nothing to set.
    in_directory: bool,
    channels: Vec<ChannelChoice>,
    calendars: Vec<String>,
    quiet_hours: String,
    digest: String,
    notice: Option<&'static str>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Saved {
    #[serde(default)]
    saved: Option<String>,
}

const CHANNELS: [(&str, &str); 4] =
    [("inApp", "In Baton (this site)"), ("email", "Email"), ("sms", "Text message (SMS)"), ("webhook", "Webhook")];

/// The form with the person's preferences, or with what they typed when it was refused
/// (`error`, `typed`), so that they correct it rather than type it all again.
async fn form(
    app: &App,
    session: &Session,
    status: StatusCode,
    notice: Option<&'static str>,
    refused: Option<(String, PreferencesBody)>,
) -> Response {
    let person = app.engine.store().person(&session.caller.subject).await.ok().flatten();
    let (error, typed) = refused.unzip();
    let shown = match typed {
        Some(typed) => Preferences { channels: typed.channels, quiet_hours: typed.quiet_hours, digest: typed.digest },
        None => person.as_ref().map(|p| p.preferences.clone()).unwrap_or_default(),
    };
    page(
        status,
        &PreferencesPage {
            who: Some(session.caller.subject.clone()),
            csrf: session.csrf(),
            in_directory: person.is_some(),
            channels: CHANNELS
                .iter()
                .map(|(name, label)| ChannelChoice { name, label, on: shown.channel_on(name) })
                .collect(),
            calendars: app.options.calendars.names().map(str::to_owned).collect(),
            quiet_hours: shown.quiet_hours.unwrap_or_default(),
            digest: shown.digest.unwrap_or_default(),
            notice,
            error,
        },
    )
}

/// `GET /ui/preferences`.
pub async fn show(State(app): State<Arc<App>>, session: Session, Query(saved): Query<Saved>) -> Response {
    let notice =
        saved.saved.map(|how| if how == "reset" { "The directory's preferences apply again." } else { "Saved." });
    form(&app, &session, StatusCode::OK, notice, None).await
}

/// `POST /ui/preferences`: the form as `setPreferences` for the person themselves.
pub async fn save(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refusal) = stale_form(&session, &headers, posted_field(&posted, "_csrf")) {
        return refusal;
    }
    let reset = posted_field(&posted, "reset") == "1";
    let body = if reset {
        PreferencesBody { reset: true, ..PreferencesBody::default() }
    } else {
        // An unticked box is not posted: each channel is set, on or off.
        let ticked = |name: &str| posted.iter().any(|(key, value)| key == "channel" && value == name);
        PreferencesBody {
            channels: CHANNELS.iter().map(|(name, _)| ((*name).to_owned(), ticked(name))).collect(),
            quiet_hours: Some(posted_field(&posted, "quietHours").to_owned()),
            digest: Some(posted_field(&posted, "digest").to_owned()),
            reset: false,
        }
    };
    let subject = session.caller.subject.clone();
    let typed = body.clone();
    match api_others::set_preferences(State(Arc::clone(&app)), as_api(&session), Path(subject), Body(body)).await {
        Ok(_) => {
            Redirect::to(if reset { "/ui/preferences?saved=reset" } else { "/ui/preferences?saved=1" }).into_response()
        }
        Err(problem) if problem.kind().status() == StatusCode::BAD_REQUEST => {
            form(&app, &session, StatusCode::BAD_REQUEST, None, Some((problem.detail, typed))).await
        }
        Err(problem) => problem_page(Some(&session), &problem),
    }
}
