use super::*;

fn manifest(step: u64) -> Manifest {
    Manifest {
        version: 1,
        tmca_version: "test".into(),
        step,
        epoch: 0,
        next_batch: 0,
        seed: 1,
        model_hash: "h".into(),
        model_config: serde_json::Value::Null,
        best_val: None,
        stale_validations: 0,
        files: BTreeMap::new(),
        global_batch: None,
        accumulate: None,
        select: None,
        data: None,
        vocabulary: None,
        provenance: None,
    }
}

fn weights(v: f32) -> HashMap<String, Tensor> {
    let t = Tensor::new(&[v, v + 1.0], &Device::Cpu).unwrap();
    HashMap::from([("w".to_string(), t)])
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn saved(ck: &Checkpointer, name: &str, step: u64) -> PathBuf {
    ck.save(
        name,
        &weights(step as f32),
        &HashMap::new(),
        &manifest(step),
    )
    .unwrap()
}

fn value(path: &Path) -> f32 {
    let l = Checkpointer::load(path, &Device::Cpu).unwrap();
    l.weights["w"].to_vec1::<f32>().unwrap()[0]
}

/// `keep_last` step checkpoints stay, the oldest go; `best` is never pruned; a replaced
/// checkpoint holds the new contents and leaves no temporary copy behind.
#[test]
fn pruning_keeps_the_newest_steps_and_best() {
    let dir = tempfile::tempdir().unwrap();
    let ck = Checkpointer::new(dir.path(), 2);
    saved(&ck, "best", 1);
    for step in 1..=4 {
        saved(&ck, &format!("step-{step:08}"), step);
    }
    assert_eq!(names(ck.dir()), ["best", "step-00000003", "step-00000004"]);
    saved(&ck, "best", 4);
    assert_eq!(value(&ck.dir().join("best")), 4.0);
    assert_eq!(names(ck.dir()), ["best", "step-00000003", "step-00000004"]);
}

/// A writer killed between moving the old `best` aside and moving the new one in: `recover`
/// puts the old copy back; killed while writing: its temporary directory goes; an old copy
/// whose replacement arrived goes too.
#[test]
fn recover_puts_back_a_half_replaced_checkpoint_and_removes_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let ck = Checkpointer::new(dir.path(), 5);
    let best = saved(&ck, "best", 7);
    let step = saved(&ck, "step-00000009", 9);
    std::fs::rename(&best, ck.dir().join(".old-best-4242")).unwrap();
    let half = ck.dir().join(".tmp-step-00000010-4242");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("weights.safetensors"), b"partial").unwrap();
    let copy = ck.dir().join(".old-step-00000009-77");
    std::fs::create_dir_all(&copy).unwrap();
    assert_eq!(ck.recover(None).unwrap(), std::slice::from_ref(&best));
    assert_eq!(names(ck.dir()), ["best", "step-00000009"]);
    assert_eq!(value(&best), 7.0);
    assert_eq!(value(&step), 9.0);
    // Nothing left to do the second time; a run without checkpoints has nothing to recover.
    assert!(ck.recover(None).unwrap().is_empty());
    // The copy a run resumes from (--resume-from .old-best-…) is left where it is.
    let copy = ck.dir().join(".old-best-55");
    std::fs::rename(&best, &copy).unwrap();
    assert!(ck.recover(Some(&copy)).unwrap().is_empty());
    assert!(copy.is_dir() && !best.exists());
    std::fs::rename(&copy, &best).unwrap();
    let empty = tempfile::tempdir().unwrap();
    assert!(Checkpointer::new(empty.path(), 1)
        .recover(None)
        .unwrap()
        .is_empty());
}

/// Resuming from an earlier step moves the later step checkpoints and a later `best` aside,
/// together; an earlier `best` stays.
#[test]
fn superseding_moves_later_steps_and_a_later_best() {
    let dir = tempfile::tempdir().unwrap();
    let ck = Checkpointer::new(dir.path(), 5);
    for step in [2, 4, 6] {
        saved(&ck, &format!("step-{step:08}"), step);
    }
    saved(&ck, "best", 4);
    assert!(ck.supersede_after(6).unwrap().is_none());
    let aside = ck.supersede_after(2).unwrap().unwrap();
    assert_eq!(names(ck.dir())[..1], ["step-00000002"]);
    assert!(!ck.dir().join("best").exists());
    assert_eq!(names(&aside), ["best", "step-00000004", "step-00000006"]);
    saved(&ck, "best", 1);
    ck.supersede_after(1).unwrap();
    assert!(
        ck.dir().join("best").is_dir(),
        "a best of the step resumed from stays"
    );
}
