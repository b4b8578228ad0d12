// An experiment, not part of the package: pixelops' conv2d as a libtorch autograd node (C++ forward and
// backward), calling the kernels that pixelops._C already holds through its entry_points capsule
// (csrc/entry_points.h). It measures what the small layers' forward + backward would gain if pixelops' eager
// autograd path were C++ instead of a Python autograd.Function; see README.md here. Built at run time against
// the installed torch by build.py. It covers the eager path only (no torch.func rules); a backward run with
// create_graph=True goes through pixelops' own differentiable backward in Python.
#include <torch/extension.h>
#ifdef PIXELOPS_NODE_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include "entry_points.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using pixelops::Array;

const pixelops::EntryPoints* kernels = nullptr;
// pixelops' differentiable backward (a Python callable taking the Python Function's backward arguments), for a
// backward that autograd records (create_graph=True): its own backward is pixelops' double-backward rule.
// Kept for the life of the process (never released at interpreter exit).
PyObject* differentiable_backward = nullptr;

Array describe(const at::Tensor& t) {
  Array a;  // an undefined tensor stays absent (null data), as the kernels read a missing bias or gradient
  if (!t.defined()) return a;
  switch (t.scalar_type()) {
    case at::kFloat: a.dtype = pixelops::DType::f32; break;
    case at::kDouble: a.dtype = pixelops::DType::f64; break;
    case at::kHalf: a.dtype = pixelops::DType::f16; break;
    case at::kBFloat16: a.dtype = pixelops::DType::bf16; break;
    default: TORCH_CHECK(false, "conv2d_node: no kernels for dtype ", t.scalar_type());
  }
  TORCH_CHECK(t.dim() <= pixelops::kMaxDims, "conv2d_node: more than 8 dimensions");
  a.data = t.data_ptr();
  a.device = t.is_cuda() ? t.get_device() : pixelops::kCpu;
  a.ndim = int(t.dim());
  for (int i = 0; i < a.ndim; ++i) {
    a.size[i] = t.size(i);
    a.stride[i] = t.stride(i);
  }
  return a;
}

// The caller's current stream on t's device (0 on the CPU), which the engine has also made current for a
// backward: the stream the forward ran on.
uintptr_t stream_of(const at::Tensor& t) {
#ifdef PIXELOPS_NODE_CUDA
  if (t.is_cuda()) return reinterpret_cast<uintptr_t>(c10::cuda::getCurrentCUDAStream(t.get_device()).stream());
#endif
  TORCH_CHECK(!t.is_cuda(), "conv2d_node: built without CUDA");
  return 0;
}

// The core's exceptions come from another shared object: caught by their std base, raised again as torch's.
template <class F>
void run(F&& kernel_call) {
  try {
    kernel_call();
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
}

// p: stride (2), padding top, bottom, left, right, dilation (2), groups, ntaps, relu, allow_tf32; as
// pixelops.ops.conv2d._setup checked them.
enum { SH, SW, PT, PB, PL, PR, DH, DW, GROUPS, NTAPS, RELU, TF32, NPARAMS };

struct Conv2dNode : torch::autograd::Function<Conv2dNode> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const std::optional<at::Tensor>& b, std::vector<int64_t> p) {
    TORCH_CHECK(p.size() == NPARAMS, "conv2d_node: expected ", int(NPARAMS), " parameters");
    const int64_t oh = (x.size(2) + p[PT] + p[PB] - p[DH] * (w.size(2) - 1) - 1) / p[SH] + 1;
    const int64_t ow = (x.size(3) + p[PL] + p[PR] - p[DW] * (w.size(3) - 1) - 1) / p[SW] + 1;
    at::Tensor y = at::empty({x.size(0), w.size(0), oh, ow}, x.options());
    const int s = x.is_cuda();
    c10::DeviceGuard guard(x.device());
    run([&] {
      kernels->conv2d_forward[s](describe(x), describe(w), describe(b.value_or(at::Tensor())), describe(y), p[SH],
                                 p[SW], p[PT], p[PL], p[DH], p[DW], p[GROUPS], p[NTAPS], p[RELU], p[TF32],
                                 stream_of(x));
    });
    ctx->save_for_backward({x, w, p[RELU] ? y : at::Tensor()});
    ctx->saved_data["p"] = std::move(p);
    ctx->saved_data["bias"] = b.has_value() && b->defined();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &y = saved[2];
    const std::vector<int64_t> p = ctx->saved_data["p"].toIntVector();
    const bool needs[3] = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                           ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)};
    const at::Tensor& grad = grads[0];
    if (at::GradMode::is_enabled()) return recorded_backward(x, w, y, grad, p, needs);
    at::Tensor gx, gw, gb;
    if (needs[0]) gx = at::empty_like(x, at::MemoryFormat::Contiguous);
    if (needs[1]) gw = at::empty_like(w, at::MemoryFormat::Contiguous);
    if (needs[2]) gb = at::empty({w.size(0)}, w.options());
    if (needs[0] || needs[1] || needs[2]) {
      const int s = x.is_cuda();
      c10::DeviceGuard guard(x.device());
      run([&] {
        kernels->conv2d_backward[s](describe(x), describe(w), describe(y), describe(grad), describe(gx),
                                    describe(gw), describe(gb), p[SH], p[SW], p[PT], p[PL], p[DH], p[DW],
                                    p[GROUPS], p[NTAPS], p[RELU], p[TF32], stream_of(x));
      });
    }
    return {gx, gw, gb, at::Tensor()};
  }

  // create_graph=True: the gradients through pixelops' differentiable backward, so that autograd records them
  static variable_list recorded_backward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& y,
                                         const at::Tensor& grad, const std::vector<int64_t>& p,
                                         const bool (&needs)[3]) {
    TORCH_CHECK(differentiable_backward, "conv2d_node: attach() was given no differentiable backward");
    py::gil_scoped_acquire gil;
    py::list wanted;
    for (bool n : needs) wanted.append(n);
    py::tuple out = py::reinterpret_borrow<py::object>(differentiable_backward)(
        x, w, y.defined() ? y : x, grad, py::make_tuple(p[SH], p[SW]), py::make_tuple(p[PT], p[PB], p[PL], p[PR]),
        py::make_tuple(p[DH], p[DW]), p[GROUPS], p[NTAPS], bool(p[RELU]), bool(p[TF32]), wanted);
    variable_list result{at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    for (int i = 0; i < 3; ++i)
      if (needs[i]) result[i] = out[i].cast<at::Tensor>();
    return result;
  }
};

at::Tensor conv2d(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                  std::vector<int64_t> params) {
  TORCH_CHECK(kernels, "conv2d_node: call attach(pixelops._C.entry_points, backward) first");
  TORCH_CHECK(x.dim() == 4 && w.dim() == 4, "conv2d_node: 4-D input and weight (pixelops checks the rest)");
  TORCH_CHECK(kernels->conv2d_forward[x.is_cuda()], "conv2d_node: this pixelops build has no CUDA kernels");
  return Conv2dNode::apply(x, w, b, std::move(params));
}

void attach(py::capsule entry_points, py::object backward) {
  auto* table = static_cast<const pixelops::EntryPoints*>(
      PyCapsule_GetPointer(entry_points.ptr(), pixelops::kEntryPointsCapsule));
  if (!table) throw py::error_already_set();
  TORCH_CHECK(table->abi == pixelops::kEntryPointsAbi, "conv2d_node: pixelops._C has entry-point ABI ",
              table->abi, ", this node was built for ", pixelops::kEntryPointsAbi);
  kernels = table;
  Py_XDECREF(differentiable_backward);
  differentiable_backward = backward.release().ptr();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attach", &attach);
  m.def("conv2d", &conv2d, py::call_guard<py::gil_scoped_release>());
}
