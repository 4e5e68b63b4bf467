// IMMISCIBLE_BOX(&fn): the boxed form of a kernel for STABLE_TORCH_LIBRARY_IMPL, as torch's
// TORCH_BOX, without its per-call leak. TORCH_BOX unboxes a `str` argument through
// torch::stable::detail::to<std::string>, which copies the string into a `new std::string` and
// returns a copy of it, so the heap object is never freed: 48 bytes a call (torch 2.10-2.13
// headers, pytorch/pytorch#191340). Each such block sits between the freed outputs of
// consecutive calls, so RSS grew by about an output's size per call. The code is inlined into
// this module from the headers it was built against, so the fix belongs here, whatever torch
// the user runs. Every other argument and return type goes through torch's own conversions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include <torch/csrc/stable/c/shim.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/stableivalue_conversions.h>

namespace immiscible::boxing {

template <typename T>
struct Unbox {
  static T take(StableIValue value) { return torch::stable::detail::to<T>(value); }
};

// The dispatcher hands the kernel an owning string handle: copy it, then release the handle.
template <>
struct Unbox<std::string> {
  static std::string take(StableIValue value) {
    StringHandle handle = torch::stable::detail::to<StringHandle>(value);
    size_t length = 0;
    const char* data = nullptr;
    STABLE_TORCH_ERROR_CODE_CHECK(torch_string_length(handle, &length));
    STABLE_TORCH_ERROR_CODE_CHECK(torch_string_c_str(handle, &data));
    std::string copy(data, length);
    STABLE_TORCH_ERROR_CODE_CHECK(torch_delete_string(handle));
    return copy;
  }
};

template <typename T>
struct Box {
  static constexpr uint64_t kCount = 1;
  static void put(StableIValue* stack, T value) {
    stack[0] = torch::stable::detail::from(value);
  }
};

template <typename... T>
struct Box<std::tuple<T...>> {
  static constexpr uint64_t kCount = sizeof...(T);
  static void put(StableIValue* stack, std::tuple<T...> values) {
    put_each(stack, values, std::index_sequence_for<T...>());
  }
  template <std::size_t... I>
  static void put_each(StableIValue* stack, std::tuple<T...>& values, std::index_sequence<I...>) {
    ((stack[I] = torch::stable::detail::from(std::get<I>(values))), ...);
  }
};

template <typename Fn, Fn* fn>
struct Boxer;

template <typename R, typename... A, R (*fn)(A...)>
struct Boxer<R(A...), fn> {
  static void boxed(StableIValue* stack, uint64_t num_args, uint64_t num_outputs) {
    STD_TORCH_CHECK(num_args == sizeof...(A), "schema has ", num_args,
                    " arguments, the kernel takes ", sizeof...(A));
    STD_TORCH_CHECK(num_outputs == Box<R>::kCount, "schema has ", num_outputs,
                    " outputs, the kernel returns ", Box<R>::kCount);
    call(stack, std::index_sequence_for<A...>());
  }
  template <std::size_t... I>
  static void call(StableIValue* stack, std::index_sequence<I...>) {
    // Braced initialization unboxes the arguments left to right, each exactly once.
    std::tuple<std::decay_t<A>...> args{Unbox<std::decay_t<A>>::take(stack[I])...};
    Box<R>::put(stack, std::apply(fn, std::move(args)));
  }
};

}  // namespace immiscible::boxing

#define IMMISCIBLE_BOX(func) \
  ::immiscible::boxing::Boxer<std::remove_pointer_t<decltype(func)>, (func)>::boxed

// A kernel file that can write IMMISCIBLE_BOX cannot write TORCH_BOX by mistake: the leak above
// becomes a compile error naming the fix.
#undef TORCH_BOX
#define TORCH_BOX(func) TORCH_BOX_leaks_str_arguments_use_IMMISCIBLE_BOX(func)
