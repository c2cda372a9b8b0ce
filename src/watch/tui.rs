//! The live terminal UI: reflectors on Teams, Members and TeamTasks redraw on every change; the
//! inboxes are re-read every second. Keyboard only (`q` quits), so it works over plain SSH.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TLine, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use tokio::sync::mpsc;

use super::model::{self, Messages, Screen, TeamId};
use super::render::{self, Line, Tone};
use super::source::{self, Inboxes};
use crate::api::{MemberPhase, TaskState};

enum Input {
    Quit,
    Next,
    Prev,
    ScrollDown,
    ScrollUp,
    Redraw,
}

/// Starts a reflector for kind `K` that pokes `tx` on every change.
fn reflect<K>(client: &Client, ns: Option<&str>, tx: mpsc::UnboundedSender<()>) -> Store<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    <K as kube::Resource>::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher(source::api::<K>(client, ns), watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    reader
}

fn style(tone: Tone) -> Style {
    match tone {
        Tone::Plain => Style::default(),
        Tone::Heading => Style::default().add_modifier(Modifier::BOLD),
        Tone::Dim => Style::default().fg(Color::DarkGray),
        Tone::System => Style::default().fg(Color::Yellow),
        Tone::Member(p) => match p {
            MemberPhase::Queued => Style::default().fg(Color::DarkGray),
            MemberPhase::Starting => Style::default().fg(Color::Yellow),
            MemberPhase::Active => Style::default().fg(Color::Green).add_modifier(Modifier::BOLD),
            MemberPhase::Idle => Style::default().fg(Color::Cyan),
            MemberPhase::AwaitingApproval => Style::default().fg(Color::LightBlue),
            MemberPhase::Completed => Style::default().fg(Color::Green),
            MemberPhase::Failed => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            MemberPhase::Cancelled => Style::default().fg(Color::Magenta),
        },
        Tone::Task(s) => match s {
            TaskState::Pending => Style::default(),
            TaskState::InProgress => Style::default().fg(Color::Yellow),
            TaskState::Completed => Style::default().fg(Color::Green),
            TaskState::Failed => Style::default().fg(Color::Red),
        },
    }
}

fn lines(ls: Vec<Line>) -> Vec<TLine<'static>> {
    ls.into_iter().map(|l| TLine::from(Span::styled(l.text, style(l.tone)))).collect()
}

/// Reads keys on a blocking thread (crossterm's blocking API) until the receiver is gone.
fn keys(tx: mpsc::UnboundedSender<Input>) {
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => {}
                Ok(false) => {
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            }
            let input = match event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => Input::Quit,
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Input::Quit,
                    KeyCode::Tab | KeyCode::Down | KeyCode::Char('j') => Input::Next,
                    KeyCode::BackTab | KeyCode::Up | KeyCode::Char('k') => Input::Prev,
                    KeyCode::PageDown | KeyCode::Char(' ') => Input::ScrollDown,
                    KeyCode::PageUp => Input::ScrollUp,
                    _ => continue,
                },
                Ok(Event::Resize(..)) => Input::Redraw,
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.send(input).is_err() {
                return;
            }
        }
    });
}

/// Keeps the last messages seen of a team whose inboxes were removed by its disbanding.
fn merge_messages(old: &mut BTreeMap<TeamId, Messages>, new: BTreeMap<TeamId, Messages>, screen: &Screen) {
    for (id, m) in new {
        let disbanded = screen.teams.iter().any(|t| t.disbanded && t.namespace == id.0 && t.name == id.1);
        let keep = disbanded
            && matches!(&m, Messages::Loaded(v) if v.is_empty())
            && matches!(old.get(&id), Some(Messages::Loaded(v)) if !v.is_empty());
        if !keep {
            old.insert(id, m);
        }
    }
}

/// Runs the UI until `q`.
pub async fn run(client: Client, namespace: Option<&str>, team: Option<&str>, inboxes: Inboxes) -> anyhow::Result<()> {
    let (changed_tx, mut changed) = mpsc::unbounded_channel();
    let teams = reflect::<crate::api::Team>(&client, namespace, changed_tx.clone());
    let members = reflect::<crate::api::Member>(&client, namespace, changed_tx.clone());
    let tasks = reflect::<crate::api::TeamTask>(&client, namespace, changed_tx);
    let (key_tx, mut key_rx) = mpsc::unbounded_channel();
    let mut terminal = ratatui::init();
    keys(key_tx);

    let mut selected = 0usize;
    let mut scroll = 0u16;
    let mut messages: BTreeMap<TeamId, Messages> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        let snapshot = |m: &BTreeMap<TeamId, Messages>| {
            let t: Vec<_> = teams.state().iter().map(|o| (**o).clone()).collect();
            let mm: Vec<_> = members.state().iter().map(|o| (**o).clone()).collect();
            let k: Vec<_> = tasks.state().iter().map(|o| (**o).clone()).collect();
            model::build(namespace, team, &t, &mm, &k, m)
        };
        let screen = snapshot(&messages);
        if !screen.teams.is_empty() {
            selected = selected.min(screen.teams.len() - 1);
        }
        let now = chrono::Local::now().format("%H:%M:%S").to_string();
        let drawn = terminal.draw(|f| {
            let table = render::teams_table(&screen);
            let [head, top, body, foot] = Layout::vertical([
                Constraint::Length(2),
                Constraint::Length((table.len() as u16 + 2).min(12)),
                Constraint::Min(5),
                Constraint::Length(1),
            ])
            .areas(f.area());
            f.render_widget(Paragraph::new(lines(render::header(&screen))), head);
            let mut table = lines(table);
            if let Some(l) = table.get_mut(selected + 1) {
                *l = l.clone().patch_style(Style::default().add_modifier(Modifier::REVERSED));
            }
            f.render_widget(Paragraph::new(table).block(Block::default().borders(Borders::ALL).title(" teams ")), top);
            let detail = match screen.teams.get(selected) {
                Some(t) => lines(render::team_detail(&screen, t)),
                None => vec![TLine::from("waiting for teams…")],
            };
            f.render_widget(Paragraph::new(detail).scroll((scroll, 0)).block(Block::default().borders(Borders::ALL).title(" team ")), body);
            f.render_widget(
                Paragraph::new(format!("q quit · ↑/↓ team · PgUp/PgDn scroll · updated {now}")).style(Style::default().fg(Color::DarkGray)),
                foot,
            );
        });
        if let Err(e) = drawn {
            break Err(e.into());
        }
        tokio::select! {
            Some(()) = changed.recv() => {
                // Coalesce a burst of events into one redraw.
                while changed.try_recv().is_ok() {}
            }
            _ = tick.tick() => {
                let new = inboxes.read_all(&super::team_ids(&screen)).await;
                merge_messages(&mut messages, new, &screen);
            }
            input = key_rx.recv() => match input {
                None | Some(Input::Quit) => break Ok(()),
                Some(Input::Next) => { selected = (selected + 1).min(screen.teams.len().saturating_sub(1)); scroll = 0; }
                Some(Input::Prev) => { selected = selected.saturating_sub(1); scroll = 0; }
                Some(Input::ScrollDown) => scroll = scroll.saturating_add(5),
                Some(Input::ScrollUp) => scroll = scroll.saturating_sub(5),
                Some(Input::Redraw) => {}
            },
        }
    };
    ratatui::restore();
    drop(key_rx);
    result
}
