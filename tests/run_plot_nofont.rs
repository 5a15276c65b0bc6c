//! Plots without any font: this test binary never registers one, so a text-free plot that
//! succeeds here needs none (a labelled plot must fail here, which proves the point).

use fixpoint::run::plot::{LinePlot, SIZE, Series, draw_lines};
use std::fs;

#[test]
fn plots_are_drawn_without_a_font() {
    let dir = std::env::temp_dir().join(format!("fixpoint-test-nofont-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let plot = LinePlot {
        title: "Loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        log_y: true,
        series: vec![
            Series { label: "train loss".into(), points: (1..50).map(|i| (i as f64, 10.0 / i as f64)).collect() },
            Series { label: "eval loss".into(), points: vec![(10.0, 1.0), (20.0, f64::NAN), (30.0, 0.3)] },
            Series { label: "empty".into(), points: vec![] },
        ],
    };
    let labelled = dir.join("labelled.png");
    assert!(draw_lines(&labelled, &plot, true).is_err(), "a font was registered, so this test proves nothing");
    assert!(!labelled.exists());

    let path = dir.join("loss.png");
    draw_lines(&path, &plot, false).unwrap();
    let b = fs::read(&path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
    assert_eq!((w, h), SIZE);
    // Degenerate data: one point, constant values, nothing at all.
    for pts in [vec![(3.0, 2.0)], vec![(1.0, 5.0), (2.0, 5.0)], vec![]] {
        let p = LinePlot { series: vec![Series { label: String::new(), points: pts }], ..LinePlot::default() };
        draw_lines(&path, &p, false).unwrap();
    }
    let left: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["loss.png"], "no temporary file is left behind");
    fs::remove_dir_all(&dir).unwrap();
}
