//! Every figure type renders, at the size asked for by its content, and is not blank.

use std::path::Path;
use viz::{heatmaps, line_chart, ColourScale, Panel, Series};

fn non_white_share(path: &Path) -> f64 {
    let img = image::open(path).unwrap().to_rgb8();
    let coloured = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    coloured as f64 / (img.width() * img.height()) as f64
}

fn panel(title: &str, rows: usize, cols: usize, sign: f64) -> Panel {
    Panel {
        title: title.into(),
        values: (0..rows)
            .map(|r| (0..cols).map(|c| sign * (r as f64 - c as f64)).collect())
            .collect(),
        row_labels: (0..rows).map(|r| format!("tok{r}")).collect(),
        col_labels: (0..cols).map(|c| c.to_string()).collect(),
        x_label: "layer".into(),
        y_label: "token".into(),
        ..Default::default()
    }
}

fn clip3() -> Vec<ColourScale> {
    vec![ColourScale::clip(3.0, "score, clipped at 3")]
}

#[test]
fn heatmaps_render_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("scan.png");
    heatmaps(&png, "LAT scan", &[panel("scan", 12, 6, 1.0)], &clip3(), "").unwrap();
    let img = image::open(&png).unwrap();
    assert!(
        img.width() > 300 && img.height() > 300,
        "{}x{}",
        img.width(),
        img.height()
    );
    assert!(non_white_share(&png) > 0.2, "blank image");

    let pair = dir.path().join("pair.png");
    heatmaps(
        &pair,
        "correction vs copy",
        &[panel("(a) correct", 6, 6, 1.0), panel("(b) copy", 6, 6, -1.0)],
        &clip3(),
        "a note",
    )
    .unwrap();
    assert!(image::open(&pair).unwrap().width() > img.width());

    let svg = dir.path().join("scan.svg");
    heatmaps(&svg, "LAT scan", &[panel("scan", 4, 3, 1.0)], &clip3(), "").unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("<rect") && text.contains("tok3"));
    // One token at one layer still draws its cell, labelled at the cell's centre.
    let single = dir.path().join("single.svg");
    heatmaps(&single, "one cell", &[panel("cell", 1, 1, 1.0)], &clip3(), "").unwrap();
    let text = std::fs::read_to_string(&single).unwrap();
    assert!(
        text.contains("tok0") && text.contains("\n0\n"),
        "labels of a 1x1 heatmap"
    );
    assert!(!text.contains("width=\"0\" height=\"0\""), "the cell is drawn");
    assert!(heatmaps(&dir.path().join("x.txt"), "t", &[panel("p", 2, 2, 1.0)], &clip3(), "").is_err());
    // A panel naming a scale the figure lacks, or marking a row it lacks, is refused.
    let mut bad = panel("p", 2, 2, 1.0);
    bad.scale = 1;
    assert!(heatmaps(&dir.path().join("bad.png"), "t", &[bad], &clip3(), "").is_err());
    let mut bad = panel("p", 2, 2, 1.0);
    bad.marked_rows = vec![2];
    assert!(heatmaps(&dir.path().join("bad.png"), "t", &[bad], &clip3(), "").is_err());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        4,
        "no temp files left behind"
    );
}

#[test]
fn curves_render() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("sweep.png");
    let xs: Vec<f64> = (-4..=4).map(f64::from).collect();
    let series = vec![
        Series {
            name: "copy cases".into(),
            ys: xs.iter().map(|x| (x + 4.0) / 8.0).collect(),
        },
        Series {
            name: "correct cases".into(),
            ys: xs.iter().map(|x| 0.5 + x / 10.0).collect(),
        },
    ];
    line_chart(&png, "sweep", "alpha", "correction magnitude", &xs, &series, (0.0, 1.0)).unwrap();
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (760, 460));
    assert!(non_white_share(&png) > 0.02);
    let bad = vec![Series {
        name: "short".into(),
        ys: vec![1.0],
    }];
    assert!(line_chart(&png, "t", "x", "y", &xs, &bad, (0.0, 1.0)).is_err());
}

/// The drawn colour follows the stated rule: saturation is value / clip, capped at full, and
/// the colour is blue below 0, white at 0, red above; one cell far off the scale changes no
/// other cell's colour (the old max-|value| scale let it wash the rest out).
#[test]
fn colour_scale_clips_and_counts() {
    let scale = ColourScale::clip(3.0, "score");
    assert_eq!(scale.saturation(1.5), 0.5);
    assert_eq!(scale.saturation(-1.0), -1.0 / 3.0);
    assert_eq!(scale.saturation(69.0), 1.0);
    assert_eq!(scale.saturation(f64::NAN), 0.0);
    let white = scale.colour(0.0);
    assert_eq!((white.0, white.1, white.2), (255, 255, 255));
    let red = scale.colour(3.0);
    let blue = scale.colour(-3.0);
    assert!(red.0 > red.2 && blue.2 > blue.0, "red above zero, blue below");
    assert_eq!(scale.colour(3.0), scale.colour(300.0));
    assert!((scale.clipped_share(&[0.0, 1.0, 4.0, -5.0]) - 0.5).abs() < 1e-12);

    let mut p = panel("scan", 3, 2, 1.0);
    p.values = vec![vec![69.0, 0.0], vec![1.0, -1.0], vec![0.5, 2.0]];
    let drawn = p.drawn(&scale);
    assert_eq!(
        drawn[1],
        vec![1.0 / 3.0, -1.0 / 3.0],
        "the decision row keeps its colour"
    );
    let lines = viz::footer(&[p], &[scale], "note");
    assert!(lines[0].starts_with("16.7% of 6 cells lie beyond \u{b1}3"), "{lines:?}");
    assert_eq!(lines[1], "note");

    let own = ColourScale::symmetric(&[-2.0, 1.0, f64::INFINITY], "difference");
    assert_eq!((own.limit, own.clipped), (2.0, false));
}
