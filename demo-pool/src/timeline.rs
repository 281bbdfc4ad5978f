//! A picture of concurrency: which worker ran which task, and when, drawn as an SVG with one
//! lane per worker (a thread or a process) and one labelled bar per task, over a time axis.
//!
//! This file only draws. What it draws comes from the pool, which knows which worker ran each
//! task and when. It uses only std, and belongs to the demo binary.
//!
//! This file is the same in demo-pool and demo-threadpool, so that each crate can be copied
//! out alone; a test in the xtask checks that the copies stay identical.

use std::time::Instant;

/// One task: the lane it ran in, its label, and when it started and ended, in seconds since
/// the start of the picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub lane: String,
    pub label: String,
    pub start: f64,
    pub end: f64,
}

impl Bar {
    pub fn new(lane: impl Into<String>, label: impl Into<String>, start: f64, end: f64) -> Bar {
        let (lane, label) = (lane.into(), label.into());
        Bar {
            lane,
            label,
            start,
            end,
        }
    }
}

/// One bar per task, from the lane it ran in, its label, and the moments it started and
/// ended: the picture's clock starts when the first task does.
pub fn bars(tasks: impl IntoIterator<Item = (String, String, Instant, Instant)>) -> Vec<Bar> {
    let tasks: Vec<_> = tasks.into_iter().collect();
    let Some(origin) = tasks.iter().map(|task| task.2).min() else {
        return Vec::new();
    };
    let at = |t: Instant| t.saturating_duration_since(origin).as_secs_f64();
    let bar = |(lane, label, start, end)| Bar::new(lane, label, at(start), at(end));
    tasks.into_iter().map(bar).collect()
}

/// Light colours, so that the dark labels on the bars stay readable.
const COLOURS: [&str; 6] = [
    "#93c5fd", "#fdba74", "#86efac", "#f9a8d4", "#c4b5fd", "#fde047",
];

/// The picture: the lanes top to bottom in the order they started their first task, a tick
/// every 1, 2 or 5 × 10ⁿ seconds, the bars coloured in the order they started.
pub fn svg(title: &str, bars: &[Bar]) -> String {
    let mut bars: Vec<&Bar> = bars.iter().collect();
    bars.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut lanes: Vec<&str> = Vec::new();
    for bar in &bars {
        if !lanes.contains(&bar.lane.as_str()) {
            lanes.push(&bar.lane);
        }
    }
    let longest = lanes.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let (left, plot, top, lane_h) = ((longest * 7 + 24).max(60) as f64, 640.0, 44.0, 34.0);
    let last = bars.iter().map(|b| b.end).fold(0.0, f64::max);
    let step = nice_step(if last > 0.0 { last / 6.0 } else { 0.1 });
    let ticks = (last / step - 1e-9).ceil().max(1.0) as usize;
    let x = |t: f64| left + t.max(0.0) / (step * ticks as f64) * plot;
    let (axis, title) = (top + lane_h * lanes.len() as f64 + 6.0, escape(title));
    let (width, height) = (left + plot + 30.0, axis + 46.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"26\" font-size=\"15\" font-weight=\"bold\">{title}</text>\n"
    );
    for (i, lane) in lanes.iter().enumerate() {
        let (y, fill, name) = (
            top + lane_h * i as f64,
            ["#f3f4f6", "#e5e7eb"][i % 2],
            escape(lane),
        );
        let (tx, ty) = (left - 8.0, y + 21.0);
        svg += &format!(
            "<rect class=\"lane\" x=\"{left}\" y=\"{y}\" width=\"{plot}\" height=\"{lane_h}\" \
             fill=\"{fill}\"/><text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{name}</text>\n"
        );
    }
    let decimals = (-step.log10() - 1e-9).ceil().max(0.0) as usize;
    for k in 0..=ticks {
        let (t, gx, y2, ty) = (step * k as f64, x(step * k as f64), axis + 4.0, axis + 18.0);
        svg += &format!(
            "<line x1=\"{gx:.1}\" y1=\"{top}\" x2=\"{gx:.1}\" y2=\"{y2}\" stroke=\"#9ca3af\" \
             stroke-width=\"0.5\"/><text x=\"{gx:.1}\" y=\"{ty}\" text-anchor=\"middle\" \
             fill=\"#4b5563\">{t:.decimals$}</text>\n"
        );
    }
    for (i, bar) in bars.iter().enumerate() {
        let lane = lanes.iter().position(|l| *l == bar.lane).unwrap_or(0);
        let (y, h, fill) = (
            top + lane_h * lane as f64 + 5.0,
            lane_h - 10.0,
            COLOURS[i % 6],
        );
        let (bx, bw) = (x(bar.start), (x(bar.end) - x(bar.start)).max(1.0));
        let (label, shown) = (escape(&bar.label), escape(&fit(&bar.label, bw - 10.0)));
        let (tx, ty, start, end) = (bx + 5.0, y + 16.0, bar.start, bar.end);
        svg += &format!(
            "<rect class=\"bar\" x=\"{bx:.1}\" y=\"{y}\" width=\"{bw:.1}\" height=\"{h}\" rx=\"3\" \
             fill=\"{fill}\" stroke=\"#374151\" stroke-width=\"0.5\"><title>{label}: {start:.3} to \
             {end:.3} s</title></rect><text x=\"{tx:.1}\" y=\"{ty}\">{shown}</text>\n"
        );
    }
    let (cx, cy) = (left + plot / 2.0, axis + 38.0);
    svg + &format!(
        "<text x=\"{cx}\" y=\"{cy}\" text-anchor=\"middle\" fill=\"#4b5563\">seconds since \
         the start</text>\n</svg>\n"
    )
}

/// The smallest of 1, 2, 5 × 10ⁿ that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = [1.0, 2.0, 5.0].into_iter().find(|m| m * magnitude >= raw);
    m.unwrap_or(10.0) * magnitude
}

/// `label`, cut short with `…` to fit in `width` pixels (about 7 per character).
fn fit(label: &str, width: f64) -> String {
    let room = (width / 7.0).max(0.0) as usize;
    match label.chars().count() {
        n if n <= room => label.to_string(),
        _ if room < 2 => String::new(),
        _ => label.chars().take(room - 1).chain(['…']).collect(),
    }
}

fn escape(text: &str) -> String {
    let text = text.replace('&', "&amp;").replace('<', "&lt;");
    text.replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lane_per_worker_one_bar_per_task() {
        let bars = [
            Bar::new("b", "x", 0.2, 0.3),
            Bar::new("a", "y", 0.0, 0.5),
            Bar::new("b", "z", 0.1, 0.2),
        ];
        let svg = svg("title", &bars);
        assert_eq!(svg.matches("class=\"lane\"").count(), 2);
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
        // Lane `a` started first, so it is drawn first; the axis ends at the last bar's end.
        assert!(svg.find(">a</text>").unwrap() < svg.find(">b</text>").unwrap());
        assert!(svg.contains(">0.5</text>") && !svg.contains(">0.6</text>"));
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn text_is_escaped_and_long_labels_are_cut() {
        let long = "a-label-far-too-long-for-its-bar";
        let bars = [
            Bar::new("<w&1>", "\"<b>\"", 0.0, 1.0),
            Bar::new("w2", long, 0.0, 0.01),
        ];
        let svg = svg("a < b", &bars);
        assert!(svg.contains(">&lt;w&amp;1&gt;</text>"));
        assert!(svg.contains(">&quot;&lt;b&gt;&quot;</text>"));
        assert!(svg.contains(">a &lt; b</text>"));
        assert!(!svg.contains("<b>") && !svg.contains("<w&1>"));
        // The whole label stays in the bar's tooltip.
        assert!(svg.contains(&format!("<title>{long}: ")));
        assert!(!svg.contains(&format!(">{long}</text>")));
        assert_eq!(fit(long, 70.0), "a-label-f…");
    }

    #[test]
    fn bars_start_with_the_first_task() {
        let t0 = Instant::now();
        let later = |ms| t0 + std::time::Duration::from_millis(ms);
        let tasks = [
            ("w1".to_string(), "b".to_string(), later(300), later(500)),
            ("w2".to_string(), "a".to_string(), later(100), later(400)),
        ];
        let bars = bars(tasks);
        assert_eq!(bars[0], Bar::new("w1", "b", 0.2, 0.4));
        assert_eq!(bars[1], Bar::new("w2", "a", 0.0, 0.3));
        assert!(super::bars([]).is_empty());
    }

    #[test]
    fn an_empty_timeline_is_still_a_picture() {
        let svg = svg("nothing ran", &[]);
        assert_eq!(svg.matches("class=\"bar\"").count(), 0);
        assert!(svg.contains(">nothing ran</text>") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn ticks_are_round_numbers() {
        for (raw, step) in [
            (0.083, 0.1),
            (0.15, 0.2),
            (0.3, 0.5),
            (3.0, 5.0),
            (7.0, 10.0),
        ] {
            assert!(
                (nice_step(raw) - step).abs() < 1e-9,
                "{raw}: {}",
                nice_step(raw)
            );
        }
    }
}
