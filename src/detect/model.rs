//! The model on ONNX Runtime: loading the runtime library and the model, checking that the
//! model is YOLOX-shaped, and running it on one picture at a time.
//!
//! ONNX Runtime is loaded at run time from `[detect] runtime`, once per process. The input
//! tensor and the output are allocated once and bound to the session, so a frame costs
//! writing its pixels into the input, one run, and reading the output in place.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::memory::Allocator;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, Session};
use ort::value::{Tensor, ValueType};

use super::yolox::{self, Found, Input, Layout, Picture, Wanted};

use crate::config::detect::SETUP_HINT;

/// Why the detector cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The runtime library is not there.
    #[error("detect.runtime: no ONNX Runtime library at {0}: {SETUP_HINT}")]
    RuntimeMissing(PathBuf),
    /// The runtime library is there but cannot be loaded.
    #[error("detect.runtime: cannot load ONNX Runtime from {path}: {message}")]
    Runtime {
        /// The library.
        path: PathBuf,
        /// What ONNX Runtime or the loader said.
        message: String,
    },
    /// The model file is not there.
    #[error("detect.model: no model at {0}: {SETUP_HINT}")]
    ModelMissing(PathBuf),
    /// The model cannot be loaded, or is not shaped like a YOLOX model.
    #[error("detect.model: {path}: {message}")]
    Model {
        /// The model.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A run failed.
    #[error("inference failed: {0}")]
    Run(#[source] ort::Error),
    /// The picture or the model's output is not shaped as expected.
    #[error("inference failed: {0}")]
    Shape(#[from] yolox::ShapeError),
    /// The model gave no output under its output's name.
    #[error("inference failed: the model produced no output")]
    NoOutput,
}

/// How long each part of one frame took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Writing the picture into the input tensor.
    pub pre: Duration,
    /// The model run.
    pub inference: Duration,
    /// Decoding boxes, thresholds and NMS.
    pub post: Duration,
}

/// A loaded YOLOX model with its bound input and output.
pub struct Model {
    session: Session,
    binding: IoBinding,
    input: Tensor<f32>,
    output_name: String,
    prepare: Input,
    layout: Layout,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("layout", &self.layout)
            .finish()
    }
}

/// The process's ONNX Runtime environment, made on first use from the first library asked for.
/// A failure is kept as its message, which every later caller is told again.
static ENVIRONMENT: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

fn environment(runtime: &Path) -> Result<Environment, ModelError> {
    let runtime = std::path::absolute(runtime).unwrap_or_else(|_| runtime.to_owned());
    if !runtime.is_file() {
        return Err(ModelError::RuntimeMissing(runtime));
    }
    let made = ENVIRONMENT.get_or_init(|| {
        let environment = ort::init_from(&runtime)
            .map_err(|e| e.to_string())?
            .with_name("alertclip")
            // Nothing about the store leaves the box.
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())?;
        Ok((runtime.clone(), environment))
    });
    match made {
        Ok((loaded, environment)) if *loaded == runtime => Ok(environment.clone()),
        Ok((loaded, _)) => Err(ModelError::Runtime {
            path: runtime,
            message: format!(
                "this process already loaded ONNX Runtime from {}; restart to change it",
                loaded.display()
            ),
        }),
        Err(message) => Err(ModelError::Runtime {
            path: runtime,
            message: message.clone(),
        }),
    }
}

impl Model {
    /// Loads the runtime (once per process) and the model, checks its shape against
    /// `classes` class names, and binds its input and output.
    pub fn load(
        runtime: &Path,
        model: &Path,
        classes: usize,
        threads: usize,
    ) -> Result<Model, ModelError> {
        let environment = environment(runtime)?;
        if !model.is_file() {
            return Err(ModelError::ModelMissing(model.to_owned()));
        }
        let bad = |message: String| ModelError::Model {
            path: model.to_owned(),
            message,
        };
        let session = Session::builder(&environment)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::All)
                    .map_err(|e| e.to_string())
            })
            .and_then(|b| b.with_intra_threads(threads).map_err(|e| e.to_string()))
            .and_then(|b| b.with_inter_threads(1).map_err(|e| e.to_string()))
            // Spinning threads keep a core busy between frames a few hundred ms apart.
            .and_then(|b| b.with_intra_op_spinning(false).map_err(|e| e.to_string()))
            .map_err(bad)?
            .commit_from_file(model)
            .map_err(|e| bad(e.to_string()))?;
        let (input_name, input_shape) = match session.inputs() {
            [input] => (input.name().to_owned(), tensor_shape(input.dtype())),
            inputs => {
                return Err(bad(format!(
                    "expected one input, found {}: not a YOLOX model",
                    inputs.len()
                )));
            }
        };
        let layout = match input_shape.as_deref() {
            Some([1, 3, h, w]) if *h >= 32 && *w >= 32 && h % 32 == 0 && w % 32 == 0 => Layout {
                width: *w as usize,
                height: *h as usize,
                classes,
            },
            other => {
                return Err(bad(format!(
                    "expected an input of shape [1, 3, H, W] with H and W multiples of 32, found {other:?}"
                )));
            }
        };
        let (output_name, output_shape) = match session.outputs() {
            [output] => (output.name().to_owned(), tensor_shape(output.dtype())),
            outputs => {
                return Err(bad(format!(
                    "expected one output, found {}: not a YOLOX model",
                    outputs.len()
                )));
            }
        };
        let expected = [1, layout.rows() as i64, layout.row_len() as i64];
        match output_shape.as_deref() {
            Some(shape) if shape == expected => {}
            Some([1, rows, values]) if *rows == expected[1] && *values > 5 => {
                return Err(bad(format!(
                    "the model has {} classes but detect.classes lists {classes}",
                    values - 5
                )));
            }
            other => {
                return Err(bad(format!(
                    "expected an output of shape {expected:?} (YOLOX, strides 8/16/32), found {other:?}"
                )));
            }
        }
        let allocator = Allocator::default();
        let make =
            |shape: Vec<i64>| Tensor::<f32>::new(&allocator, shape).map_err(|e| bad(e.to_string()));
        let input = make(vec![1, 3, layout.height as i64, layout.width as i64])?;
        let output = make(expected.to_vec())?;
        let mut binding = session.create_binding().map_err(|e| bad(e.to_string()))?;
        binding
            .bind_input(&input_name, &input)
            .and_then(|()| binding.bind_output(&output_name, output))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Model {
            session,
            binding,
            input,
            output_name,
            prepare: Input::new(layout),
            layout,
        })
    }

    /// The model's input width and height: pictures must fit inside.
    pub fn input_size(&self) -> (usize, usize) {
        (self.layout.width, self.layout.height)
    }

    /// Finds the `wanted` classes in `picture`, best first, into `found`.
    pub fn detect(
        &mut self,
        picture: &Picture,
        wanted: &[Wanted],
        found: &mut Vec<Found>,
    ) -> Result<Timings, ModelError> {
        let started = Instant::now();
        let (_, tensor) = self.input.extract_tensor_mut();
        self.prepare.fill(tensor, picture)?;
        let prepared = Instant::now();
        let outputs = self
            .session
            .run_binding(&self.binding)
            .map_err(ModelError::Run)?;
        let ran = Instant::now();
        let output = outputs.get(&self.output_name).ok_or(ModelError::NoOutput)?;
        let (_, values) = output
            .try_extract_tensor::<f32>()
            .map_err(ModelError::Run)?;
        yolox::decode(
            values,
            &self.layout,
            (picture.width, picture.height),
            wanted,
            found,
        )?;
        let done = Instant::now();
        Ok(Timings {
            pre: prepared - started,
            inference: ran - prepared,
            post: done - ran,
        })
    }
}

fn tensor_shape(dtype: &ValueType) -> Option<Vec<i64>> {
    dtype.tensor_shape().map(|s| s.to_vec())
}
