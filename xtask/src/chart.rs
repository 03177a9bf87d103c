//! `cargo xtask bench --svg FILE`: the run's figures as horizontal bars on a
//! log scale, two per figure: how many times better than CPython (the ratio
//! of the medians) and, where the OS floor bounds the figure, how many times
//! better than the floor (below 1: slower than the kernel's own round trip).
//! Bars start at 1, so a bar to the right is a win. The SVG backend only:
//! text is left to the viewer's fonts, nothing is linked.

use std::path::Path;

use plotters::prelude::*;

use crate::bench::Row;

const LO: f64 = 0.01;
const HI: f64 = 1000.0;
const ROW_PX: u32 = 34;
const NAMES_PX: u32 = 300;

/// The two bars of one figure: (vs CPython, vs the OS floor), each oriented
/// so that above 1 means multiproc is better.
fn bars(row: &Row) -> (Option<f64>, Option<f64>) {
    let floor = row.floor_times().map(|x| if row.better == "lower" { 1.0 / x } else { x });
    (row.ratio(), floor)
}

pub fn draw(path: &Path, rows: &[Row]) -> Result<(), String> {
    let rows: Vec<&Row> = rows.iter().filter(|r| bars(r) != (None, None)).collect();
    if rows.is_empty() {
        return Err("--svg: no figure has a ratio to draw".to_owned());
    }
    let err = |e: DrawingAreaErrorKind<_>| format!("--svg {}: {e}", path.display());
    let n = rows.len();
    let height = 120 + ROW_PX * n as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("multiproc: times better than CPython and than the OS floor (log scale)", ("sans-serif", 20))
        .margin(10)
        .margin_left(NAMES_PX)
        .x_label_area_size(40)
        .build_cartesian_2d((LO..HI).log_scale(), 0.0..n as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .y_labels(0)
        .disable_y_mesh()
        .x_desc("times better (above 1: multiproc wins)")
        .draw()
        .map_err(err)?;
    let at = |i: usize| (n - 1 - i) as f64;
    let clamp = |v: f64| v.clamp(LO, HI);
    let series = [("vs CPython", BLUE, 0.5, 0.88), ("vs the OS floor", RED, 0.12, 0.5)];
    for (k, (label, color, y0, y1)) in series.into_iter().enumerate() {
        let values: Vec<(usize, f64)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let (cpython, floor) = bars(r);
                Some((i, if k == 0 { cpython? } else { floor? }))
            })
            .collect();
        chart
            .draw_series(
                values
                    .iter()
                    .map(|&(i, v)| Rectangle::new([(1.0, at(i) + y0), (clamp(v), at(i) + y1)], color.filled())),
            )
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart
            .draw_series(values.iter().map(|&(i, v)| {
                Text::new(format!("{v:.2}x"), (clamp(v).max(1.0) * 1.1, at(i) + y0), ("sans-serif", 12))
            }))
            .map_err(err)?;
    }
    chart.draw_series(std::iter::once(PathElement::new(vec![(1.0, 0.0), (1.0, n as f64)], BLACK))).map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(err)?;
    for (i, row) in rows.iter().enumerate() {
        let (_, y) = chart.backend_coord(&(1.0, at(i) + 0.5));
        root.draw(&Text::new(row.name.clone(), (10, y - 7), ("sans-serif", 13))).map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Stat;

    #[test]
    fn draws_an_svg_with_every_figure_that_has_a_ratio() {
        let rows = vec![
            Row {
                name: "pipe_roundtrip_us".into(),
                unit: "us".into(),
                better: "lower".into(),
                multiproc: Stat::of(&[30.0]),
                cpython: Stat::of(&[45.0]),
                floor: Some(("unix_socket_roundtrip_us".into(), 15.0)),
            },
            Row { name: "no_ratio_us".into(), better: "lower".into(), multiproc: Stat::of(&[1.0]), ..Row::default() },
        ];
        assert_eq!(bars(&rows[0]), (Some(1.5), Some(0.5)));
        let path = std::env::temp_dir().join(format!("xtask-chart-{}.svg", std::process::id()));
        draw(&path, &rows).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.contains("pipe_roundtrip_us") && svg.contains("1.50x") && svg.contains("0.50x"));
        assert!(!svg.contains("no_ratio_us"));
        assert!(draw(&path, &rows[1..]).is_err());
    }
}
