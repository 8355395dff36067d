//! The deploy API under `/application-server/api/`, answered by this page:
//! the service worker hands each request over the bridge, and the page runs
//! it with the same code as its buttons, so the screens follow API calls.

use crate::catalog::{self, ENVIRONMENTS};
use crate::Page;
use appserver_proto::api::{ApiCall, ApiRoutes, AppAction, RouteError};
use std::rc::Rc;
use vm_bridge::agent::{Action, AppInfo};
use vm_bridge::api::{ApiRequest, ApiResponse};
use vm_bridge::bridge::BridgeError;
use vm_bridge::VmState;
use wasm_bindgen_futures::spawn_local;

/// Makes `page` answer the API.
pub(crate) fn install(page: &Rc<Page>) {
    let routes = Rc::new(ApiRoutes::new());
    let handler_page = page.clone();
    page.bridge.set_api_handler(Rc::new(move |request| {
        let page = handler_page.clone();
        let routes = routes.clone();
        Box::pin(async move { handle(&page, &routes, request).await })
    }));
}

async fn handle(page: &Rc<Page>, routes: &ApiRoutes, request: ApiRequest) -> ApiResponse {
    let call = match routes.route(&request.method, &request.target) {
        Ok(call) => call,
        Err(e) => return route_error(&e),
    };
    match call {
        ApiCall::ListEnvironments => ApiResponse::json(200, &environments(page)),
        ApiCall::Status => ApiResponse::json(200, &status(page).await),
        ApiCall::LoadEnvironment(id) => load(page, &id).await,
        ApiCall::ListApps => match ready(page) {
            Err(e) => e,
            Ok(()) => match page.bridge.refresh_apps().await {
                Ok(apps) => {
                    let list: Vec<_> = apps.iter().map(|a| app_json(page, a)).collect();
                    crate::show_apps(page, apps).await;
                    ApiResponse::json(200, &serde_json::json!({ "apps": list }))
                }
                Err(e) => bridge_error(&e),
            },
        },
        ApiCall::AppStatus(name) => match existing(page, &name).await {
            Ok(info) => {
                ApiResponse::json(200, &serde_json::json!({ "app": app_json(page, &info) }))
            }
            Err(e) => e,
        },
        ApiCall::Logs(name) => match existing(page, &name).await {
            Err(e) => e,
            Ok(_) => match page.bridge.logs(&name).await {
                Ok(log) => ApiResponse::json(200, &serde_json::json!({ "name": name, "log": log })),
                Err(e) => bridge_error(&e),
            },
        },
        ApiCall::Control(name, action) => {
            if let Err(e) = existing(page, &name).await {
                return e;
            }
            let action = match action {
                AppAction::Start => Action::Start,
                AppAction::Stop => Action::Stop,
                AppAction::Restart => Action::Restart,
            };
            let result = page.bridge.control(&name, action).await;
            crate::refresh_apps(page).await;
            match result {
                Ok(info) => {
                    ApiResponse::json(200, &serde_json::json!({ "app": app_json(page, &info) }))
                }
                Err(e) => bridge_error(&e),
            }
        }
        ApiCall::Delete(name) => {
            if let Err(e) = existing(page, &name).await {
                return e;
            }
            let result = page.bridge.delete(&name).await;
            crate::refresh_apps(page).await;
            match result {
                Ok(()) => ApiResponse::json(200, &serde_json::json!({ "deleted": name })),
                Err(e) => bridge_error(&e),
            }
        }
        ApiCall::Deploy(name) => deploy(page, &name, &request).await,
    }
}

fn route_error(e: &RouteError) -> ApiResponse {
    let mut response = ApiResponse::error(e.status(), e.code(), &e.to_string());
    if let RouteError::MethodNotAllowed { allow, .. } = e {
        response
            .headers
            .push(("allow".into(), allow.as_bytes().to_vec()));
    }
    response
}

/// The HTTP status of a bridge failure.
fn bridge_error(e: &BridgeError) -> ApiResponse {
    use vm_bridge::agent::AgentError;
    let status = match e {
        BridgeError::NotReady => 503,
        BridgeError::Agent(AgentError::Refused { status, .. }) => *status,
        BridgeError::Agent(AgentError::Timeout) => 504,
        BridgeError::Agent(_) | BridgeError::Download(_) | BridgeError::Manifest(_) => 502,
        BridgeError::Engine(_) | BridgeError::Store(_) => 500,
    };
    ApiResponse::error(status, e.code(), &e.to_string())
}

/// Refuses app calls until an environment is ready.
fn ready(page: &Page) -> Result<(), ApiResponse> {
    if page.bridge.state() == VmState::Ready {
        return Ok(());
    }
    let message = match page.env.get() {
        None => "No environment is loaded: POST /application-server/api/environments/<id>/load \
                 first."
            .to_owned(),
        Some(env) => format!(
            "The {} environment is {}: follow GET /application-server/api/status until it is \
             ready.",
            env.name,
            page.bridge.state().name()
        ),
    };
    Err(ApiResponse::error(503, "not_running", &message))
}

/// The app `name` as the agent reports it, or a 404.
async fn existing(page: &Page, name: &str) -> Result<AppInfo, ApiResponse> {
    ready(page)?;
    let apps = page
        .bridge
        .refresh_apps()
        .await
        .map_err(|e| bridge_error(&e))?;
    apps.into_iter().find(|a| a.name == name).ok_or_else(|| {
        ApiResponse::error(
            404,
            "unknown_app",
            &format!("No app named `{name}` is deployed in this environment."),
        )
    })
}

fn app_json(page: &Page, app: &AppInfo) -> serde_json::Value {
    let mut json = serde_json::to_value(app).unwrap_or_default();
    json["url"] = format!("/app/{}/", app.name).into();
    json["requests"] = page.bridge.requests(&app.name).0.into();
    json
}

fn environments(page: &Page) -> serde_json::Value {
    let current = page.env.get().map(|e| e.id);
    let list: Vec<_> = ENVIRONMENTS
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "name": e.name,
                "about": e.about,
                "runs": e.runs,
                "loaded": current == Some(e.id),
            })
        })
        .collect();
    serde_json::json!({ "current": current, "environments": list })
}

async fn status(page: &Page) -> serde_json::Value {
    let state = page.bridge.state();
    let mut json = serde_json::json!({
        "environment": page.env.get().map(|e| e.id),
        "state": state.name(),
    });
    match &state {
        VmState::Loading {
            loaded,
            total,
            file,
        } => {
            json["progress"] =
                serde_json::json!({ "loaded": loaded, "total": total, "file": file });
        }
        VmState::Error(message) => {
            let code = page.bridge.error_code().unwrap_or_default();
            json["error"] = serde_json::json!({ "code": code, "message": message });
        }
        VmState::Ready => {
            if let Some((_, manifest)) = page.bridge.environment() {
                json["version"] = manifest.version.into();
            }
            json["ready_ms"] = page.bridge.ready_after_ms().into();
            json["uptime_s"] = ((js_sys::Date::now() - page.ready_at_ms.get()) / 1000.0)
                .max(0.0)
                .round()
                .into();
            if let Ok(guest) = page.bridge.guest_status().await {
                json["memory_kb"] = guest["meminfo_kb"].clone();
            }
            json["apps"] = page.bridge.apps().into();
        }
        _ => {}
    }
    json
}

/// Loads environment `id`, or switches to it: the answer comes at once
/// (202 while it loads), and `GET /status` follows the load.
async fn load(page: &Rc<Page>, id: &str) -> ApiResponse {
    let Some(env) = catalog::find(id) else {
        let ids: Vec<&str> = ENVIRONMENTS.iter().map(|e| e.id).collect();
        return ApiResponse::error(
            404,
            "unknown_environment",
            &format!(
                "No environment is called `{id}`: choose one of {}.",
                ids.join(", ")
            ),
        );
    };
    let follow = "/application-server/api/status";
    match page.env.get() {
        Some(current) if current.id != env.id => {
            // One VM per page: the switch saves this one and reloads the
            // page into the other, so answer before it goes.
            let page = page.clone();
            spawn_local(async move {
                vm_bridge::timer::sleep(300).await;
                crate::switch(page, env).await;
            });
            ApiResponse::json(
                202,
                &serde_json::json!({
                    "environment": env.id, "from": current.id, "state": "switching",
                    "follow": follow,
                }),
            )
        }
        current => {
            let state = page.bridge.state();
            if state == VmState::Ready && current.is_some() {
                return ApiResponse::json(200, &status(page).await);
            }
            if current.is_none() || matches!(state, VmState::Error(_) | VmState::Unloaded) {
                spawn_local(crate::load(page.clone(), env));
            }
            ApiResponse::json(
                202,
                &serde_json::json!({
                    "environment": env.id, "state": page.bridge.state().name(),
                    "follow": follow,
                }),
            )
        }
    }
}

async fn deploy(page: &Rc<Page>, name: &str, request: &ApiRequest) -> ApiResponse {
    if let Err(e) = ready(page) {
        return e;
    }
    let content_type = request.header("content-type").unwrap_or_default();
    let upload = match appserver_upload::deploy::read(&content_type, &request.body, request.query())
    {
        Ok(upload) => upload,
        Err(e) => return ApiResponse::error(e.status(), e.code(), &e.to_string()),
    };
    let tar = match upload.to_tar() {
        Ok(tar) => tar,
        Err(e) => return ApiResponse::error(e.status(), e.code(), &e.to_string()),
    };
    let settings = upload.settings();
    let result = page
        .bridge
        .deploy(name, &tar, Some(&settings), &|_| {})
        .await;
    crate::refresh_apps(page).await;
    let deployed = match result {
        Ok(deployed) => deployed,
        Err(e) => return bridge_error(&e),
    };
    let mut body = serde_json::json!({ "app": app_json(page, &deployed.info) });
    match &deployed.stored_bytes {
        Ok(bytes) => body["stored_bytes"] = (*bytes).into(),
        Err(e) => {
            body["stored_error"] = serde_json::json!({ "code": e.code(), "message": e.to_string() })
        }
    }
    ApiResponse::json(201, &body)
}
