//! DEVA's text mode over the fixture detector: captions, Grounded-SAM segments, configs that
//! list only differences, and the default detector from the models folder.

use super::*;

#[test]
fn text_mode_captions_locate_each_phrase() {
    let Some(dir) = common::fixtures("grounding_dino") else {
        return;
    };
    let fx = load_fixture(&dir);
    let tok = fx.tokenizer();
    assert_eq!(
        split_prompt(" person.hat .horse. "),
        ["person", "hat", "horse"]
    );
    let mut checked = 0;
    for case in fx.cases() {
        let prompts = fx.prompts(&case);
        let [prompt] = prompts.as_slice() else {
            continue;
        };
        let phrases = split_prompt(prompt);
        let caption = Caption::new(&tok, &phrases).unwrap();
        // The caption built from the phrases tokenises like the prompt itself.
        assert_eq!(
            caption.tokens.ids[0],
            fx.tokens(&case).ids[0],
            "{case}: caption tokens"
        );
        for (p, span) in phrases.iter().zip(&caption.spans) {
            let ids = &caption.tokens.ids[0][span.clone()];
            assert_eq!(&tok.decode(ids).unwrap(), p, "{case}: span of {p:?}");
        }
        // Label containing a phrase -> that phrase; no phrase in the label -> the phrase
        // with the highest token probability.
        let l = caption.tokens.len();
        for (i, span) in caption.spans.iter().enumerate() {
            let mut d = Detection {
                query: 0,
                score: 0.9,
                bbox: [0.0; 4],
                token_probs: vec![0.1; l],
                token_mask: vec![false; l],
            };
            for m in &mut d.token_mask[span.start..=span.end] {
                *m = true;
            }
            assert_eq!(
                caption.phrase_of(&tok, &d).unwrap(),
                i,
                "{case}: label of phrase {i}"
            );
            d.token_mask = vec![false; l];
            d.token_probs[span.end - 1] = 0.3;
            assert_eq!(
                caption.phrase_of(&tok, &d).unwrap(),
                i,
                "{case}: best token in phrase {i}"
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "no single-prompt case");
}

#[test]
fn grounded_sam_segments_carry_their_phrases() {
    let (Some(dir), Some(sam_dir)) = (common::fixtures("grounding_dino"), common::fixtures("sam"))
    else {
        return;
    };
    let fx = load_fixture(&dir);
    let sam =
        deva::segmenter::sam::SamModel::load(&sam_dir.join("weights.pth"), &Device::Cpu).unwrap();
    let case = fx
        .cases()
        .into_iter()
        .find(|c| fx.prompts(c).len() == 1 && fx.opt(c, "image").is_some())
        .expect("a single-image case");
    let prompt = fx.prompts(&case)[0].clone();
    let config = TextModeConfig {
        resize: fx.rule(&case),
        ..Default::default()
    };
    let mut seg = GroundedSam::new(
        fx.model(),
        fx.tokenizer(),
        std::sync::Arc::new(sam),
        &prompt,
        config,
    )
    .unwrap();
    let phrases = split_prompt(&prompt);
    let names = deva::segmenter::ImageSegmenter::category_names(&seg);
    assert_eq!(
        names.keys().copied().collect::<Vec<u32>>(),
        (1..=phrases.len() as u32).collect::<Vec<_>>()
    );
    assert_eq!(names.into_values().collect::<Vec<_>>(), phrases);

    // Detections: the reference detections at the text-mode threshold after class-agnostic
    // NMS, with scores close to the reference (the image is resized by the port here).
    let image = fx.get(&case, "image");
    let k = fx.meta["cases"][&case]["images"][0].as_u64().unwrap();
    let dets = seg.detect(&fx.image(k)).unwrap();
    let tag = format!("post_t0{}", (config.box_threshold * 100.0).round() as u32);
    let ref_boxes: Vec<[f32; 4]> = fx
        .get(&case, &format!("{tag}.b0.boxes"))
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect();
    let ref_scores = fx
        .get(&case, &format!("{tag}.b0.scores"))
        .to_vec1::<f32>()
        .unwrap();
    let keep = deva::segmenter::sam::amg::nms(&ref_boxes, &ref_scores, config.nms_threshold);
    assert!(!keep.is_empty(), "{case}: no reference detection");
    assert_eq!(dets.len(), keep.len(), "{case}: detections after NMS");
    for (d, &i) in dets.iter().zip(&keep) {
        assert!(
            (d.score - ref_scores[i]).abs() < 2e-2,
            "{case}: score {} vs {}",
            d.score,
            ref_scores[i]
        );
        for (a, b) in d.bbox.iter().zip(&ref_boxes[i]) {
            assert!(
                (a - b).abs() < 2.0,
                "{case}: box {:?} vs {:?}",
                d.bbox,
                ref_boxes[i]
            );
        }
        assert!(d.phrase < phrases.len());
    }

    // Segments: painted SAM masks, each with its detection's phrase as category.
    let (h, w, _) = image.dims3().unwrap();
    let frame = deva::video::Frame {
        index: 0,
        name: "0".into(),
        image: fx.image(k).into(),
    };
    let out = deva::segmenter::ImageSegmenter::segment(&mut seg, &frame, None)
        .unwrap()
        .unwrap();
    assert_eq!((out.map.width(), out.map.height()), (w, h));
    let areas = out.map.areas();
    assert!(out.segments.len() <= dets.len());
    for s in &out.segments {
        let c = s.category_id.expect("every segment has a category") as usize;
        assert!((1..=phrases.len()).contains(&c), "category {c}");
        assert!(
            areas.get(&s.id).copied().unwrap_or(0) > 0,
            "segment {} is empty",
            s.id
        );
        let score = s.score.expect("detector score");
        assert!(dets.iter().any(|d| d.score == score && d.phrase + 1 == c));
    }
    let listed: Vec<_> = out.segments.iter().map(|s| s.id).collect();
    assert!(
        areas.keys().all(|id| listed.contains(id)),
        "painted ids without a segment"
    );
}

/// A Hugging Face `config.json` that lists only what differs from `transformers`' defaults
/// (as the published grounding-dino-tiny one does for its Swin and BERT parts) reads as the
/// Swin-T / BERT-base sizes.
#[test]
fn configs_listing_only_differences_take_the_transformers_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let text = r#"{
        "backbone_config": {"model_type": "swin", "out_features": ["stage2", "stage3", "stage4"],
                            "out_indices": [2, 3, 4]},
        "text_config": {"model_type": "bert"},
        "d_model": 256, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
        "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048,
        "num_queries": 900, "num_feature_levels": 4, "encoder_n_points": 4,
        "decoder_n_points": 4, "two_stage": true, "embedding_init_target": true,
        "decoder_bbox_embed_share": true, "two_stage_bbox_embed_share": false
    }"#;
    std::fs::write(&path, text).unwrap();
    let c = GroundingDinoConfig::from_file(&path).unwrap();
    let official = deva::segmenter::grounded::weights::official_config(96).unwrap();
    let (b, o) = (&c.backbone_config, &official.backbone_config);
    assert_eq!(
        (b.embed_dim, &b.depths, &b.num_heads, b.window_size),
        (o.embed_dim, &o.depths, &o.num_heads, o.window_size)
    );
    let (t, o) = (&c.text_config, &official.text_config);
    assert_eq!(
        (
            t.hidden_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.intermediate_size,
            t.vocab_size,
            t.max_position_embeddings
        ),
        (
            o.hidden_size,
            o.num_hidden_layers,
            o.num_attention_heads,
            o.intermediate_size,
            o.vocab_size,
            o.max_position_embeddings
        )
    );
}

/// `--prompt` without `--gdino-weights` resolves the `grounding-dino-tiny` bundle through the
/// models folder. The built-in manifest's entries get the sizes and sha256 of stand-ins (the
/// fixture's model, config and tokenizer), so no download is needed.
#[test]
fn prompt_without_weights_uses_the_fetched_bundle() {
    use deva::models::{Manifest, ModelStore};
    use deva::segmenter::grounded::{TextSpec, DEFAULT_GDINO, DEFAULT_GDINO_FILES};
    let (Some(dir), Some(sam_dir)) = (common::fixtures("grounding_dino"), common::fixtures("sam"))
    else {
        return;
    };
    let fx = load_fixture(&dir);
    let stand_ins = ["model.safetensors", "config.json", "tokenizer.json"].map(|f| dir.join(f));
    let mut manifest = Manifest::builtin().unwrap();
    let mut files = Vec::new();
    for (name, src) in DEFAULT_GDINO_FILES.iter().zip(&stand_ins) {
        let e = manifest
            .models
            .iter_mut()
            .find(|e| e.name == *name)
            .unwrap();
        assert_eq!(e.bundle.as_deref(), Some(DEFAULT_GDINO), "{name}");
        let bytes = std::fs::read(src).unwrap();
        e.size = Some(bytes.len() as u64);
        e.sha256 = Some(common::sha256_hex(&bytes));
        files.push(e.file.clone());
    }
    let models = tempfile::tempdir().unwrap();
    let store = || ModelStore::with_manifest(models.path(), manifest.clone());
    let case = fx
        .cases()
        .into_iter()
        .find(|c| fx.prompts(c).len() == 1 && fx.opt(c, "image").is_some())
        .expect("a single-image case");
    let rule = fx.rule(&case);
    let spec = TextSpec {
        prompt: fx.prompts(&case)[0].clone(),
        sam_weights: Some(sam_dir.join("weights.pth")),
        shortest_edge: rule.shortest_edge,
        longest_edge: rule.longest_edge,
        ..TextSpec::default()
    };
    let fetch_hint = format!("deva models fetch {DEFAULT_GDINO}`");

    // Not fetched: the error says what to fetch.
    let e = spec.build(&store(), &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains(&fetch_hint) && e.contains("--gdino-weights"),
        "{e}"
    );

    // Fetched: the bundle's files are used.
    for (src, file) in stand_ins.iter().zip(&files) {
        std::fs::copy(src, models.path().join(file)).unwrap();
    }
    let (w, c, t) = spec.detector_files(&store()).unwrap();
    let expected: Vec<PathBuf> = files.iter().map(|f| models.path().join(f)).collect();
    assert_eq!(vec![w, c.unwrap(), t], expected);
    let image = fx.image(fx.meta["cases"][&case]["images"][0].as_u64().unwrap());
    let from_store = spec.build(&store(), &Device::Cpu).unwrap();
    let explicit = TextSpec {
        weights: Some(stand_ins[0].clone()),
        ..spec.clone()
    }
    .build(&store(), &Device::Cpu)
    .unwrap();
    let dets = from_store.detect(&image).unwrap();
    assert_eq!(dets, explicit.detect(&image).unwrap());

    // A corrupt bundle file is refused, naming the bundle to fetch again.
    std::fs::write(models.path().join(&files[2]), b"{}").unwrap();
    let e = spec.build(&store(), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains(&fetch_hint) && e.contains(&files[2]), "{e}");
}
