use deva::config::FlowConfig;
use deva::mask::ObjectProbs;
use deva::propagator::{FlowPropagator, Propagator};
use deva::video::Frame;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seq = &args[1];
    let nframes: usize = args[2].parse().unwrap();
    let mut config = FlowConfig::default();
    for kv in &args[3..] {
        let (k, v) = kv.split_once('=').unwrap();
        match k {
            "fill" => config.fill_radius = v.parse().unwrap(),
            "fr" => config.filter_radius = v.parse().unwrap(),
            "feps" => config.filter_eps = v.parse().unwrap(),
            "cocc" => config.color_weight_occluded = v.parse().unwrap(),
            "cvis" => config.color_weight_visible = v.parse().unwrap(),
            "finest" => config.finest_level = v.parse().unwrap(),
            "fsig" => config.fill_color_sigma = v.parse().unwrap(),
            "sh" => config.sharpen = v.parse().unwrap(),
            "cpx" => config.consistency_px = v.parse().unwrap(),
            _ => panic!("{k}"),
        }
    }
    let dir = std::path::PathBuf::from("/work/shared/data/davis16");
    let mut prop = FlowPropagator::new(config).unwrap();
    let mut ious = vec![];
    let total = std::fs::read_dir(dir.join("JPEGImages/480p").join(seq))
        .unwrap()
        .count();
    let n = nframes.min(total);
    let t0 = std::time::Instant::now();
    for t in 0..n {
        let frame = Frame {
            index: t,
            name: format!("{t:05}"),
            image: deva::imageio::read_rgb(&dir.join(format!("JPEGImages/480p/{seq}/{t:05}.jpg")))
                .unwrap(),
        };
        let truth =
            deva::imageio::read_index_png(&dir.join(format!("Annotations/480p/{seq}/{t:05}.png")))
                .unwrap()
                .map
                .remap(|v| u32::from(v != 0));
        let probs = if t == 0 {
            ObjectProbs::one_hot(&truth, &[1]).unwrap()
        } else {
            prop.propagate(&frame).unwrap()
        };
        if std::env::var_os("DUMP").is_some() && t % 6 == 0 {
            let m = probs.argmax();
            let obj = probs.channel(1);
            let mut img = frame.image.clone();
            for (i, px) in img.pixels_mut().enumerate() {
                let g = truth.data()[i] != 0;
                let p = m.data()[i] != 0;
                px[0] = if p { 255 } else { px[0] / 2 };
                px[1] = if g { 255 } else { px[1] / 2 };
                px[2] = (obj[i] * 255.0) as u8;
            }
            img.save(format!("/tmp/flowdbg/{seq}_{t:03}.png")).unwrap();
        }
        if t > 0 && t + 1 < total {
            ious.push(probs.argmax().mask(1).iou(&truth.mask(1)).unwrap());
            let o = probs.channel(1);
            let bgmass: f32 = o
                .iter()
                .zip(truth.data())
                .filter(|(_, &g)| g == 0)
                .map(|(v, _)| v)
                .sum::<f32>()
                / o.len() as f32;
            if t % 4 == 0 {
                eprintln!(
                    "t {t} J {:.3} soft obj mass on bg {:.4}",
                    ious.last().unwrap(),
                    bgmass
                );
            }
        }
        prop.update(&frame, &probs, t % 5 == 0).unwrap();
        prop.release_frame(t.saturating_sub(1));
    }
    let mean = ious.iter().sum::<f64>() / ious.len() as f64;
    println!(
        "{seq} frames {n} mean J {mean:.3} last {:.3} time/frame {:.2}s",
        ious.last().unwrap(),
        t0.elapsed().as_secs_f64() / n as f64
    );
}
