//! Serialises `f32` config values as they were written: `0.1`, not `0.10000000149011612` (serde
//! widens an `f32` to the nearest `f64`, whose shortest form shows the f32's binary error).
//! For `#[serde(serialize_with = "…")]` on `f32` fields; reading them back gives the same f32.

use serde::ser::{SerializeSeq, Serializer};

/// The `f64` whose shortest decimal form is the `f32`'s shortest form.
fn widen(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// One `f32`.
pub fn one<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(widen(*x))
}

/// A sequence of `f32` (a `Vec` or an array).
pub fn many<S: Serializer, V: AsRef<[f32]>>(v: &V, s: S) -> Result<S::Ok, S::Error> {
    let v = v.as_ref();
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&widen(*x))?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Fields {
        #[serde(serialize_with = "super::one")]
        a: f32,
        #[serde(serialize_with = "super::many")]
        b: [f32; 2],
        #[serde(serialize_with = "super::many")]
        c: Vec<f32>,
    }

    #[test]
    fn f32_values_are_written_as_given_and_read_back_equal() {
        let f = Fields {
            a: 0.1,
            b: [0.8, 1.25],
            c: vec![0.485, 0.456, 1e-3],
        };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"a":0.1,"b":[0.8,1.25],"c":[0.485,0.456,0.001]}"#);
        assert_eq!(serde_json::from_str::<Fields>(&json).unwrap(), f);
    }
}
