// The Python face of the core: one line per kernel entry point, no logic; and the conv2d entry points as a
// table for C++ callers in other shared objects (entry_points.h).
// Arrays arrive as the tuple (data_ptr, shape, strides, dtype_code, device) that python/pixelops/_arrays.py
// builds; streams as integers. std exceptions map to Python's: invalid_argument -> ValueError,
// out_of_range -> IndexError, runtime_error -> RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <type_traits>

#include "entry_points.h"
#include "ops.h"

namespace py = pybind11;
using pixelops::Array;

namespace pixelops_binding {
// torch.Tensor and torch's dtypes (in DType code order), handed over once by pixelops._torch.common so that a
// tensor can be read here directly: a per-call tuple built in Python costs about half a microsecond more.
PyObject* tensor_type = nullptr;
PyObject* torch_dtypes[8] = {};

bool read_tensor(PyObject* t, Array& value) {
  static PyObject* s_data_ptr = PyUnicode_InternFromString("data_ptr");
  static PyObject* s_stride = PyUnicode_InternFromString("stride");
  static PyObject* s_get_device = PyUnicode_InternFromString("get_device");
  static PyObject* s_shape = PyUnicode_InternFromString("shape");
  static PyObject* s_dtype = PyUnicode_InternFromString("dtype");
  // Each read is checked before the next: a tensor without data (a torch.func wrapper) raises in data_ptr(),
  // and a call made with that exception pending would replace it with a SystemError.
  auto read = [](PyObject* r) {
    if (!r) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(r);
  };
  py::object ptr = read(PyObject_CallMethodNoArgs(t, s_data_ptr));
  py::object shape = read(PyObject_GetAttr(t, s_shape));
  py::object strides = read(PyObject_CallMethodNoArgs(t, s_stride));
  py::object device = read(PyObject_CallMethodNoArgs(t, s_get_device));
  py::object dtype = read(PyObject_GetAttr(t, s_dtype));
  Py_ssize_t nd = PyTuple_GET_SIZE(shape.ptr());
  if (nd > pixelops::kMaxDims) throw pixelops::ValueError("pixelops handles arrays of at most 8 dimensions");
  value.data = PyLong_AsVoidPtr(ptr.ptr());
  value.ndim = int(nd);
  for (Py_ssize_t i = 0; i < nd; ++i) {
    value.size[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), i));
    value.stride[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(strides.ptr(), i));
  }
  int code = -1;
  for (int i = 0; i < 8; ++i)
    if (torch_dtypes[i] == dtype.ptr()) code = i;
  value.dtype = static_cast<pixelops::DType>(code);
  value.device = int(PyLong_AsLong(device.ptr()));
  return true;
}
}  // namespace pixelops_binding

namespace pybind11::detail {
// An array arrives either as a torch.Tensor (read directly) or as the tuple
// (data_ptr, shape, strides, dtype_code, device) that pixelops._arrays.view builds for numpy arrays.
template <>
struct type_caster<Array> {
  PYBIND11_TYPE_CASTER(Array, const_name("ArrayView"));

  bool load(handle src, bool) {
    PyObject* t = src.ptr();
    if (pixelops_binding::tensor_type && PyObject_TypeCheck(t, (PyTypeObject*)pixelops_binding::tensor_type))
      return pixelops_binding::read_tensor(t, value);
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 5) return false;
    value.data = PyLong_AsVoidPtr(PyTuple_GET_ITEM(t, 0));
    PyObject* shape = PyTuple_GET_ITEM(t, 1);
    PyObject* strides = PyTuple_GET_ITEM(t, 2);
    if (!PyTuple_Check(shape) || !PyTuple_Check(strides)) return false;
    Py_ssize_t nd = PyTuple_GET_SIZE(shape);
    if (nd > pixelops::kMaxDims || PyTuple_GET_SIZE(strides) != nd)
      throw pixelops::ValueError("pixelops handles arrays of at most 8 dimensions");
    value.ndim = int(nd);
    for (Py_ssize_t i = 0; i < nd; ++i) {
      value.size[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, i));
      value.stride[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(strides, i));
    }
    value.dtype = static_cast<pixelops::DType>(PyLong_AsLong(PyTuple_GET_ITEM(t, 3)));
    value.device = int(PyLong_AsLong(PyTuple_GET_ITEM(t, 4)));
    if (PyErr_Occurred()) { PyErr_Clear(); return false; }
    return true;
  }
};
}  // namespace pybind11::detail

namespace {

template <class T> struct Identity { using type = T; };

const Array& first_array(const Array& a, ...) { return a; }

// Binds one op: the CPU kernel for host arrays, the CUDA kernel (on the arrays' GPU) for device arrays.
template <class... A>
auto by_device(const char* name, void (*cpu)(A...), typename Identity<void (*)(A...)>::type gpu) {
  return [name, cpu, gpu](A... args) {
    const Array& lead = first_array(args...);
    if (lead.on_cpu()) {
      py::gil_scoped_release unlocked;
      return cpu(args...);
    }
    if (!gpu)
      throw pixelops::ValueError(std::string(name) +
                                 ": got a CUDA array, but this pixelops build has no CUDA kernels "
                                 "(rebuild where nvcc is found, or with -Ccmake.define.PIXELOPS_CUDA=ON)");
#ifdef PIXELOPS_WITH_CUDA
    // Run on the arrays' GPU, then give the thread back the device it had (PyTorch keeps its own notion).
    int previous = pixelops::cuda::current_device();
    if (previous == lead.device) return gpu(args...);
    pixelops::cuda::set_device(lead.device);
    struct Restore {
      int d;
      ~Restore() {
        try { pixelops::cuda::set_device(d); } catch (...) {}
      }
    } restore{previous};
#endif
    return gpu(args...);
  };
}

}  // namespace

#ifdef PIXELOPS_WITH_CUDA
#define CUDA_KERNEL(f) &pixelops::cuda::f
#else
#define CUDA_KERNEL(f) nullptr
#endif
#define BIND(f) m.def(#f, by_device(#f, &pixelops::cpu::f, CUDA_KERNEL(f)))

PYBIND11_MODULE(_C, m) {
  m.doc() = "pixelops kernels (pointer-and-shape interface; use the pixelops package, not this module)";
#ifdef PIXELOPS_WITH_CUDA
  m.attr("built_with_cuda") = true;
  m.def("cuda_device_count", &pixelops::cuda::device_count);
#else
  m.attr("built_with_cuda") = false;
  m.def("cuda_device_count", [] { return 0; });
#endif

  m.def("register_torch", [](py::object tensor_type, py::sequence dtypes) {
    if (dtypes.size() != 8) throw pixelops::ValueError("register_torch: expected 8 dtypes");
    pixelops_binding::tensor_type = tensor_type.release().ptr();  // kept for the life of the process
    for (int i = 0; i < 8; ++i) pixelops_binding::torch_dtypes[i] = py::object(dtypes[i]).release().ptr();
  });

  BIND(relu_forward);
  BIND(relu_backward);
  BIND(cross_entropy_forward);
  BIND(cross_entropy_backward);
  BIND(cross_entropy_target_backward);
  BIND(conv2d_forward);
  BIND(conv2d_backward);
  BIND(pixelcnn_sample);
  BIND(pixel_uniforms);

  static const pixelops::EntryPoints entry_points = {
      pixelops::kEntryPointsAbi,
      {&pixelops::cpu::conv2d_forward, CUDA_KERNEL(conv2d_forward)},
      {&pixelops::cpu::conv2d_backward, CUDA_KERNEL(conv2d_backward)},
  };
  m.attr("entry_points") =
      py::capsule(static_cast<const void*>(&entry_points), pixelops::kEntryPointsCapsule);
}
